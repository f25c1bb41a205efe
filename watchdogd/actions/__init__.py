"""Actions: one module per family. Never a shell: argv lists or client APIs only."""
