// The Grafana types the dashboards are checked against (@grafana/schema at the Grafana image's version):
// the dashboard, and the options of each panel type the dashboards use (named here: both are "Options").
import type { Options as StatPanelOptions } from "@grafana/schema/dist/esm/raw/composable/stat/panelcfg/x/StatPanelCfg_types.gen";
import type { Options as TimeSeriesPanelOptions } from "@grafana/schema/dist/esm/raw/composable/timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen";

export type { Dashboard } from "@grafana/schema/dist/esm/raw/dashboard/x/dashboard_types.gen";
export interface TimeseriesOptions extends TimeSeriesPanelOptions {}
export interface StatOptions extends StatPanelOptions {}
