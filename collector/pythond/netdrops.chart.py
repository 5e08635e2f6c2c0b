# -*- coding: utf-8 -*-
# Description: netdrops python.d module: receive-path packet drops (softnet backlog, interfaces,
# sockets, tuning) for Netdata. The collector core lives in the netdrops_collector package,
# which `netdrops-collector install` puts in python.d's python_modules.
# SPDX-License-Identifier: GPL-3.0-or-later

from bases.charts import CLABEL_COMMIT, Chart
from bases.collection import safe_print
from bases.FrameworkServices.SimpleService import SimpleService

from netdrops_collector import config as nd_config
from netdrops_collector.core import Collector
from netdrops_collector.frontends.protocol import clabel_lines

ORDER = []
CHARTS = {}


class LabelledChart(Chart):
    """python.d's Chart announces only the `_collect_job` label; ours carry device, kind, peer
    and container labels, which the alarms and the advisor filter on."""

    labels = {}

    def create(self):
        self.params["hidden"] = self.params.get("hidden", "")
        chart_line = ("CHART {type}.{id} '{name}' '{title}' '{units}' '{family}' '{context}' "
                      "{chart_type} {priority} {update_every} '{hidden}' 'python.d.plugin' '{module_name}'\n"
                      ).format(**self.params)
        labels = "CLABEL '_collect_job' '{0}' '0'\n".format(self.params["actual_job_name"])
        labels += clabel_lines(self.labels) + CLABEL_COMMIT
        dims = "".join(d.create() for d in self.dimensions)
        self.flags.push = False
        self.flags.created = True
        safe_print(chart_line + labels + dims)


def chart_options(chart):
    return [None, chart.title, chart.units, chart.family, chart.context, chart.chart_type]


def dim_line(dim):
    return [dim.id, dim.name, dim.algorithm, dim.multiplier, dim.divisor]


class Service(SimpleService):
    def __init__(self, configuration=None, name=None):
        SimpleService.__init__(self, configuration=configuration, name=name)
        self.order = ORDER
        self.definitions = CHARTS
        self.collector = None

    def check(self):
        try:
            cfg = nd_config.build(self.configuration)
            self.collector = Collector(cfg)
            self.collector.collect()
        except Exception as error:  # one clear line in Netdata's log instead of a traceback
            self.error("cannot start: {0}".format(error))
            if self.collector is not None:  # python.d may retry: keep no sockets or counters open
                self.collector.close()
                self.collector = None
            return False
        return True

    def get_data(self):
        try:
            values = self.collector.collect()
        except Exception as error:
            self.error("collection failed: {0}".format(error))
            return None
        self.apply_changes(self.collector.take_changes())
        return values

    def apply_changes(self, changes):
        for chart in changes.created:
            if chart.id in self.charts:
                del self.charts.charts[chart.id]  # same interface back: announce it afresh
            new = self.charts.add_chart([chart.id] + chart_options(chart))
            new.__class__ = LabelledChart
            new.labels = chart.labels
            for dim in chart.dims:
                new.add_dimension(dim_line(dim))
        for chart, dim in changes.dims_added:
            if chart.id in self.charts:
                self.charts[chart.id].add_dimension(dim_line(dim))
        for chart in changes.obsoleted:
            if chart.id in self.charts:
                self.charts[chart.id].obsolete()
                # Forget it, or python.d would keep every vanished veth's chart for ever.
                del self.charts.charts[chart.id]
