"""The compiled core of fastlimit: the mapped counter table and its hot path."""
