"""End-to-end tests: the Node backend stub and browsers around `enricher serve`."""
