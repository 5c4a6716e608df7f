"""Third-party-style Lambda code the local gateway must run unchanged (see the tests)."""
