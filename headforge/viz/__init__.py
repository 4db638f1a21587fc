"""Pictures people look at instead of numbers: contact sheets, turntables, colour maps."""
