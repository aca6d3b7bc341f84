//! The agent's integration tests, in one binary so the workspace links one test
//! executable for them instead of one per file. Each module is one area; `common`
//! holds the test peers (an S3 server, Azurite, fake-gcs-server, a fake Kubernetes API
//! server, a fake Docker engine, a private podman API service, an OpenID provider).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin_api;
mod admin_auth;
mod admin_listener;
mod alerting_claims;
mod alerting_http_providers;
mod alerting_outbox;
mod alerting_policy;
mod alerting_smtp_apprise;
mod auth_oidc;
mod bench_agent;
mod catalog_bounds;
mod catalog_fuzz;
mod checks_dns;
mod checks_docker;
mod checks_docker_podman;
mod checks_http;
mod checks_keyword_json;
mod checks_kubernetes;
mod checks_ping;
mod checks_steam;
mod checks_tcp;
mod checks_websocket;
mod cli;
mod cluster_catalog;
mod cluster_ingress;
mod cluster_lease;
mod common;
mod consensus_alerting;
mod console;
mod console_ops;
mod downsample;
mod export_azure;
mod export_gcs;
mod export_locations;
mod export_s3;
mod export_urgent;
mod failover;
mod folder_reload;
mod logs;
mod push;
mod round_trip;
mod serve_site;
mod settings_auth;
mod settings_instance;
mod settings_mode;
mod store;
mod store_claims;
mod store_pg_faults;
mod store_postgres;
mod store_records;
mod validation_fixtures;
