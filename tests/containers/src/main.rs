//! The container tests: the Compose hierarchy of `deploy/compose/` brought up from the
//! image `deploy/image/build.sh` builds, a sync checked through `sitesyncctl tree --output
//! json`, then real faults between containers, each scenario checking SPEC invariants 1–4
//! and printing its time to converge. Run by `tests/containers/run.sh` (see the README
//! there); not a `cargo test`.
//!
//! - [`docker`]: the Docker and Compose command lines, and the project's teardown.
//! - [`cluster`]: each node's Admin service over mutual TLS, and the watch on sequences.
//! - [`checks`]: the invariants — the tree's digests, and the stores' change logs.
//! - [`scenarios`]: the faults.
//!
//! Environment: `SITESYNC_IMAGE` (default `sitesync:dev`), `SITESYNC_COMPOSE_PROJECT` (the
//! project name; default one of its own), `SITESYNC_SCENARIOS` (a
//! comma-separated subset of the scenario names, default all), `SITESYNC_KEEP_PROJECT=1`
//! (leave the project running afterwards).
#![forbid(unsafe_code)]

mod checks;
mod cluster;
mod docker;
mod scenarios;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;

use crate::cluster::Cluster;
use crate::docker::{Compose, docker};

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("container tests: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the repository")
        .to_path_buf()
}

async fn run() -> anyhow::Result<bool> {
    let root = repository();
    let image = std::env::var("SITESYNC_IMAGE").unwrap_or_else(|_| "sitesync:dev".into());
    let selected: Option<Vec<String>> = std::env::var("SITESYNC_SCENARIOS")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.split(',').map(|n| n.trim().to_owned()).collect());
    let keep = std::env::var("SITESYNC_KEEP_PROJECT").is_ok_and(|v| v == "1");
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let project = std::env::var("SITESYNC_COMPOSE_PROJECT")
        .unwrap_or_else(|_| format!("sitesync-ct-{}-{stamp}", std::process::id()));
    docker(&["image", "inspect", &image]).with_context(|| {
        format!("the image {image} is missing: build it with deploy/image/build.sh")
    })?;

    let compose_file = root.join("deploy/compose/docker-compose.yml");
    let test_file = root.join("tests/containers/compose.test.yml");
    let compose = Compose::new(&project, &[&compose_file, &test_file], &image, keep)?;
    compose.set_variable(
        "SITESYNC_CONTAINER_TESTS_DIR",
        &root.join("tests/containers").display().to_string(),
    );
    compose.set_variable(
        "SITESYNC_CATALOG_UPDATES",
        &scenarios::INITIAL_UPDATES.to_string(),
    );
    eprintln!(
        "project {project}, image {image}, with `{}`",
        compose.program()
    );
    let work = tempfile::tempdir()?;

    // Bring-up: certificates, catalog, the five nodes; then the first cascade.
    let started = tokio::time::Instant::now();
    if let Err(e) = compose.run(&["up", "-d"]) {
        compose.print_logs(&[]);
        return Err(e);
    }
    let pki = work.path().join("pki");
    let pki_container = compose.container("pki-ca")?;
    // The operator's certificate may be issued a moment after `up` returns.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let _ = std::fs::remove_dir_all(&pki);
        docker(&[
            "cp",
            &format!("{pki_container}:/etc/sitesync/pki"),
            &pki.display().to_string(),
        ])?;
        if pki.join("operators/admin.key").exists() {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the operator's certificate was never issued"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let cluster = Cluster::new(compose, &pki)?;
    let mut run = scenarios::Run::new(cluster, work.path().to_owned());
    match run.converge("bring-up", &cluster::SITES).await {
        Ok(_) => eprintln!(
            "PASS bring-up: every site holds CEN's digests {:.1} s after `up`",
            started.elapsed().as_secs_f64()
        ),
        Err(e) => {
            eprintln!("FAIL bring-up: {e:#}");
            run.cluster.compose.print_logs(&[]);
            return Ok(false);
        }
    }

    let mut results = Vec::new();
    for scenario in scenarios::ALL {
        if selected
            .as_ref()
            .is_some_and(|names| !names.iter().any(|n| n == scenario.name))
        {
            continue;
        }
        eprintln!("\n=== {}: {}", scenario.name, scenario.title);
        let began = tokio::time::Instant::now();
        let outcome = (scenario.run)(&mut run).await;
        let violations = run.cluster.violations();
        let outcome = match outcome {
            Ok(converged) if violations.is_empty() => Ok(converged),
            Ok(_) => Err(anyhow::anyhow!(
                "sequences went backwards: {}",
                violations.join("; ")
            )),
            Err(e) => Err(e),
        };
        match &outcome {
            Ok(converged) => eprintln!(
                "PASS {}: converged {:.1} s after the fault ended ({:.0} s in all)",
                scenario.name,
                converged.as_secs_f64(),
                began.elapsed().as_secs_f64()
            ),
            Err(e) => {
                eprintln!("FAIL {}: {e:#}", scenario.name);
                run.cluster.compose.print_logs(scenario.containers);
            }
        }
        let failed = outcome.is_err();
        results.push((scenario.name, outcome));
        if failed {
            // Later scenarios start from a converged hierarchy; without one they prove nothing.
            if let Err(e) = run
                .converge("recovery after a failed scenario", &cluster::SITES)
                .await
            {
                eprintln!(
                    "the hierarchy did not converge again ({e:#}); the remaining scenarios are skipped"
                );
                break;
            }
        }
    }

    eprintln!("\n=== summary");
    let mut passed = true;
    for (name, outcome) in &results {
        match outcome {
            Ok(converged) => eprintln!(
                "  PASS {name:<28} converged in {:.1} s",
                converged.as_secs_f64()
            ),
            Err(e) => {
                passed = false;
                eprintln!("  FAIL {name:<28} {e:#}");
            }
        }
    }
    if let Some(names) = &selected {
        for name in names {
            if !scenarios::ALL.iter().any(|s| s.name == name) {
                eprintln!("  unknown scenario {name}");
                passed = false;
            }
        }
    }
    Ok(passed)
}
