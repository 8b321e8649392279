"""Generated Python stubs of the `autonomic.*` protobuf packages (the directory mirrors the proto package)."""
