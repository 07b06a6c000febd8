"""The platform's rules, as plain validators: run by the CrossGuard pack, the offline synth and the tests."""
