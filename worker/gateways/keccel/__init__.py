"""Keccel (DR Congo): its adapter and its simulator."""
