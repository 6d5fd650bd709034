"""alarmgw package."""
