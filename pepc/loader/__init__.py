"""Loading policy directories and host configuration, safely.

Public API (other stages depend on these names):

- `load_policy(path, *, max_file_bytes=...) -> Policy`: raises PolicyError
  with every finding that blocks loading;
- `load_config(path, policy_dir) -> Config`;
- `lifecycle_findings(policy, now) -> list[Finding]`: `expired`/`disabled`.
"""

from pepc.loader.config import default_config_path, load_config
from pepc.loader.policy import lifecycle_findings, load_policy
from pepc.loader.reader import DEFAULT_MAX_FILE_BYTES, LOADER_CLASS, MAX_DEPTH, MAX_NODES, parse_text

__all__ = [
    "DEFAULT_MAX_FILE_BYTES",
    "LOADER_CLASS",
    "MAX_DEPTH",
    "MAX_NODES",
    "default_config_path",
    "lifecycle_findings",
    "load_config",
    "load_policy",
    "parse_text",
]
