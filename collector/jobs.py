"""The external plugin's configuration: go.d style YAML, top-level defaults plus a `jobs:` list.

    update_every: 1
    jobs:
      - name: local

Looked up as netdrops.conf in $NETDATA_USER_CONFIG_DIR, then $NETDATA_STOCK_CONFIG_DIR (Netdata
passes both to plugins), unless NETDROPS_CONFIG names a file.
"""

import os

from . import config as nd_config

CONFIG_NAME = "netdrops.conf"
DEFAULT_JOBS = [{"name": "local"}]


def find_config(environ=None):
    env = os.environ if environ is None else environ
    explicit = env.get("NETDROPS_CONFIG")
    if explicit:
        return explicit
    for var, default in (("NETDATA_USER_CONFIG_DIR", "/etc/netdata"),
                         ("NETDATA_STOCK_CONFIG_DIR", "/usr/lib/netdata/conf.d")):
        path = os.path.join(env.get(var, default), CONFIG_NAME)
        if os.path.exists(path):
            return path
    return None


def parse_jobs(document, update_every=None, source=CONFIG_NAME):
    """A loaded YAML document -> [(job name, validated config)]."""
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise nd_config.ConfigError("{0}: expected a mapping at the top".format(source))
    defaults = {k: v for k, v in document.items() if k != "jobs"}
    if update_every is not None and "update_every" not in defaults:
        defaults["update_every"] = update_every
    jobs = document.get("jobs") or DEFAULT_JOBS
    if not isinstance(jobs, list):
        raise nd_config.ConfigError("{0}: 'jobs' must be a list".format(source))
    out, names = [], set()
    for i, job in enumerate(jobs, 1):
        if not isinstance(job, dict) or not isinstance(job.get("name"), str) or not job["name"]:
            raise nd_config.ConfigError("{0}: job {1} needs a name".format(source, i))
        if job["name"] in names:
            raise nd_config.ConfigError("{0}: job name {1!r} is used twice".format(source, job["name"]))
        names.add(job["name"])
        merged = dict(defaults)
        merged.update(job)
        try:
            out.append((job["name"], nd_config.build(merged)))
        except nd_config.ConfigError as error:
            raise nd_config.ConfigError("{0}: job {1!r}: {2}".format(source, job["name"], error))
    return out


def load_jobs(update_every=None, environ=None):
    path = find_config(environ)
    if path is None:
        return parse_jobs(None, update_every)
    import yaml  # python.d already requires PyYAML; only needed when a config file exists
    with open(path, encoding="utf-8") as f:
        try:
            document = yaml.safe_load(f)
        except yaml.YAMLError as error:
            raise nd_config.ConfigError("{0}: not valid YAML: {1}".format(path, error))
    return parse_jobs(document, update_every, path)
