"""A strict reader of Netdata's plugins.d protocol, for checking what our front-ends print."""

import shlex

KEYWORDS = {"CHART", "CLABEL", "CLABEL_COMMIT", "DIMENSION", "BEGIN", "SET", "END", "DISABLE", "VARIABLE",
            "FUNCTION"}


class Stream:
    """Charts, their dimensions and labels, and every SET, as Netdata would have received them."""

    def __init__(self):
        self.charts = {}      # "type.id" -> dict(context=..., family=..., options=..., dims=[ids], labels={})
        self.sets = {}        # "type.id" -> [ {dim id: value} per BEGIN/END block ]
        self.disabled = False
        self.functions = {}   # name -> (timeout, help), registered with FUNCTION GLOBAL


def parse(text, strict=True):
    stream = Stream()
    chart = None        # the chart that DIMENSION/CLABEL lines belong to
    block = None        # (chart id, values) inside BEGIN ... END
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        words = shlex.split(line)
        key = words[0]
        if key not in KEYWORDS:
            if strict:
                raise AssertionError("line {0}: unknown keyword {1!r}".format(lineno, key))
            continue
        if key == "CHART":
            assert block is None, "line {0}: CHART inside BEGIN/END".format(lineno)
            assert len(words) >= 10, "line {0}: CHART has {1} words".format(lineno, len(words))
            cid = words[1]
            assert "." in cid, "line {0}: chart id {1!r} has no type".format(lineno, cid)
            entry = stream.charts.setdefault(cid, {"dims": [], "labels": {}})
            entry.update(title=words[3], units=words[4], family=words[5], context=words[6],
                         chart_type=words[7], options=words[10] if len(words) > 10 else "")
            chart = cid
        elif key == "DIMENSION":
            assert chart is not None, "line {0}: DIMENSION before any CHART".format(lineno)
            assert words[3] in ("absolute", "incremental", "percentage-of-absolute-row",
                                "percentage-of-incremental-row"), "line {0}: algorithm {1}".format(lineno, words[3])
            int(words[4]), int(words[5])
            if words[1] not in stream.charts[chart]["dims"]:
                stream.charts[chart]["dims"].append(words[1])
        elif key == "CLABEL":
            assert chart is not None and len(words) == 4, "line {0}: bad CLABEL".format(lineno)
            stream.charts[chart]["labels"][words[1]] = words[2]
        elif key == "BEGIN":
            assert block is None, "line {0}: BEGIN inside BEGIN".format(lineno)
            assert words[1] in stream.charts, "line {0}: BEGIN for undeclared chart {1}".format(lineno, words[1])
            block = (words[1], {})
        elif key == "SET":
            assert block is not None, "line {0}: SET outside BEGIN/END".format(lineno)
            assert len(words) == 4 and words[2] == "=", "line {0}: bad SET".format(lineno)
            assert words[1] in stream.charts[block[0]]["dims"], \
                "line {0}: SET of undeclared dimension {1} in {2}".format(lineno, words[1], block[0])
            block[1][words[1]] = int(words[3])
        elif key == "END":
            assert block is not None, "line {0}: END without BEGIN".format(lineno)
            stream.sets.setdefault(block[0], []).append(block[1])
            block = None
        elif key == "DISABLE":
            stream.disabled = True
        elif key == "FUNCTION":  # 1.37: FUNCTION [GLOBAL] "name" timeout "help"; ours is GLOBAL
            assert block is None and len(words) == 5 and words[1] == "GLOBAL", "line {0}: bad FUNCTION".format(lineno)
            assert int(words[3]) > 0, "line {0}: FUNCTION timeout {1}".format(lineno, words[3])
            stream.functions[words[2]] = (int(words[3]), words[4])
    return stream
