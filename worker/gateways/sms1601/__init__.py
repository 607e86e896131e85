"""1601SMS (Netherlands): its adapter and its simulator."""
