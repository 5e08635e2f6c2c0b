"""Netdata's plugins.d text protocol: CHART, CLABEL, DIMENSION, BEGIN/SET/END.

Pure formatting: every function returns text; the plugin decides when to write it.
"""

LABEL_SOURCE_AUTO = 1


def quote(text):
    """Netdata splits on quotes and spaces; neither quote may appear inside a quoted word."""
    return "'" + str(text).replace("'", "_").replace('"', "_") + "'"


def clabel_lines(labels):
    return "".join("CLABEL {0} {1} {2}\n".format(quote(k), quote(v), LABEL_SOURCE_AUTO)
                   for k, v in sorted(labels.items()))


def chart_line(type_id, chart, update_every, obsolete=False, module="netdrops"):
    return "CHART {0}.{1} '' {2} {3} {4} {5} {6} {7} {8} {9} 'netdrops.plugin' {10}\n".format(
        type_id, chart.id, quote(chart.title), quote(chart.units), quote(chart.family),
        quote(chart.context), chart.chart_type, chart.priority, update_every,
        quote("obsolete" if obsolete else ""), quote(module))


def dimension_line(dim):
    return "DIMENSION {0} {1} {2} {3} {4}\n".format(
        quote(dim.id), quote(dim.name), dim.algorithm, dim.multiplier, dim.divisor)


def chart_definition(type_id, chart, update_every):
    # Netdata 1.37 takes a CLABEL_COMMIT with no CLABEL before it for a protocol error and
    # disconnects the plugin: commit only labels there are.
    labels = clabel_lines(chart.labels)
    return (chart_line(type_id, chart, update_every)
            + (labels + "CLABEL_COMMIT\n" if labels else "")
            + "".join(dimension_line(d) for d in chart.dims))


def obsolete_chart(type_id, chart, update_every):
    return chart_line(type_id, chart, update_every, obsolete=True)


def chart_values(type_id, chart, values, since_usec):
    """BEGIN/SET/END for one chart, or '' when none of its dimensions has a value."""
    sets = ["SET {0} = {1}\n".format(quote(d.id), values[d.id]) for d in chart.dims if d.id in values]
    if not sets:
        return ""
    begin = "BEGIN {0}.{1} {2}\n".format(type_id, chart.id, since_usec) if since_usec else \
        "BEGIN {0}.{1}\n".format(type_id, chart.id)
    return begin + "".join(sets) + "END\n"
