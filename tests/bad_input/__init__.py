"""Bad input stops at the door (issue 10): every case exits 2 with one clear message and leaves nothing behind."""
