"""posepipe's command line: thin commands that parse options and hand a plan to `pipeline/`."""
