"""Text in: the built-in corpora, reading files and directories, encoding, the token cache,
vocabularies and records."""
