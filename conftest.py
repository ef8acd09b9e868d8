# Fixtures shared by every test folder live in libs/testing (trailerlink_testing.fixtures).
pytest_plugins = ["trailerlink_testing.fixtures"]
