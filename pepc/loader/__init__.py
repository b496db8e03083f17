"""Loading policy directories and host configuration, safely.

Takes: a policy directory (or a git revision of one) and pepc.yaml.
Gives: a validated `Policy` and `Config` (pepc.policy), or a PolicyError
holding every finding that blocks loading, each at file:line:column.
Start with: policy.py (reader.py reads YAML safely; schema.py validates;
values.py parses addresses and ports; cache.py reloads what changed;
revisions.py reads `REV:PATH`).

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
