"""vmagent's built-in pilot commands, registered in ``vmagent.pilot_commands`` like any plugin's."""
