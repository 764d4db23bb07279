"""The trigger DSL: trigger files (bounded YAML), conditions, operators, the matcher, durations."""
