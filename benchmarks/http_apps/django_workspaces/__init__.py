"""The Django app of the admin pages benchmark: which workspace a user belongs to, and as what."""
