"""Stack compositions: one module per kind of stack, each building on validated config."""
