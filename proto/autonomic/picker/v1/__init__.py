"""`autonomic.picker.v1`: picker.proto and the stubs `make proto` generates from it (do not edit those by hand)."""
