"""What instances boot from: the probe payload and the container image, built before timing."""
