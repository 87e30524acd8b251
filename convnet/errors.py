"""The errors convnet raises for bad input; entry points print their one-line message and exit 1."""


class ConvnetError(Exception):
  """Base class: a problem the user can fix, described in one line."""


class ConfigError(ConvnetError, ValueError):
  """A config value that is not allowed (names the field, the value and what is allowed)."""


class DataError(ConvnetError):
  """Missing, truncated or corrupt data (names the file and what is wrong)."""


class TrainingError(ConvnetError):
  """Training cannot go on, e.g. a NaN loss."""
