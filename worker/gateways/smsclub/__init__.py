"""SMSClub (Ukraine): its adapter and its simulator."""
