"""Load generation, the exactness check and limiter comparisons for fastlimit."""
