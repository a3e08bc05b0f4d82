"""The command-line programs (train, evaluate, benchmark): flags parsed, then one library call."""
