"""`python` for the README's command blocks (tests/test_readme.py puts it first on their PATH).

`python SCRIPT FLAGS...` runs as usual, except a command that needs a TPU or several hosts (`--use_tpu=True`,
`--num_hosts` > 1): that one only parses FLAGS with SCRIPT's own absl definitions, so an unknown flag or a
bad value exits with status 1 and a one-line message. Each call is appended, as one json line
(`script`, `mode`: run or parse, `args`), to the file named by $README_CALLS.
"""

import json
import os
import re
import runpy
import sys


def needs_a_cluster(flags):
    for flag in flags:
        hosts = re.fullmatch(r"--num_hosts=(\d+)", flag)
        if re.fullmatch(r"--use_tpu(=(?i:true|t|1))?", flag) or (hosts and int(hosts[1]) > 1):
            return True
    return False


def parse_flags_only(script, flags):
    from absl import app
    from absl import flags as absl_flags

    def parse_only(main, argv=None, **kwargs):
        # Every script ends in absl.app.run(main) once its flags are defined: parse, run nothing.
        try:
            absl_flags.FLAGS(argv or sys.argv)
        except absl_flags.Error as e:
            sys.exit(f"{script}: {e}")
        sys.exit(0)

    app.run = parse_only
    sys.argv = [script, *flags]
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    runpy.run_path(script, run_name="__main__")
    sys.exit(f"{script} did not call absl.app.run")


def main():
    args = sys.argv[1:]
    script = args[0] if args and not args[0].startswith("-") else None
    cluster = script is not None and needs_a_cluster(args[1:])
    with open(os.environ["README_CALLS"], "a") as log:
        call = {
            "script": script and os.path.basename(script),
            "mode": "parse" if cluster else "run",
        }
        log.write(json.dumps({**call, "args": args[1:]}) + "\n")
    if cluster:
        parse_flags_only(script, args[1:])
    os.execv(sys.executable, [sys.executable, *args])


if __name__ == "__main__":
    main()
