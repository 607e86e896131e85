"""KING SMS PRO (Togo): its adapter and its simulator."""
