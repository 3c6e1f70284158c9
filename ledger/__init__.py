"""The books of a residents' basic pension fund: domain, commands and stores."""
