"""How the apps meet the sites: which site a node is (node_site), what a site reports before round 1 (site_report)
and how the server turns the reports into its roster (roster), federated evaluation (evaluation), and what each
message costs besides its work (process_stats)."""
