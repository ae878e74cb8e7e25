"""What the tests share: servers on loopback, fake upstreams, fixtures' building blocks. No tests."""
