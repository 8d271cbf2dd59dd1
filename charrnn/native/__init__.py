"""The C code: building and loading the libraries, the autograd recurrence that trains through
them, and the C sources with their headers."""
