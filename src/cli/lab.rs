//! `cutover lab up|down`: a kept lab for trying cutover by hand.

use std::path::PathBuf;

use super::{EXIT_FAILED, EXIT_OK, runtime};
use crate::lab::{self, Lab, LabDir, LabState, Supervision};

fn default_dir() -> PathBuf {
    // SAFETY: geteuid cannot fail.
    let uid = unsafe { libc::geteuid() };
    std::env::temp_dir().join(format!("cutover-lab-{uid}"))
}

/// `lab up`.
pub fn up(dir: Option<PathBuf>) -> u8 {
    let dir = dir.unwrap_or_else(default_dir);
    if let Ok(state) = LabState::load(&dir) {
        errln!(
            "a lab is already up in {} (plan: {}); run `cutover lab down --dir {}` first",
            dir.display(),
            state.plan.display(),
            dir.display()
        );
        return EXIT_FAILED;
    }
    let Some(rt) = runtime() else {
        return EXIT_FAILED;
    };
    let result = rt.block_on(async {
        let lab_dir = LabDir::kept(&dir)?;
        let lab = Lab::start(lab_dir, Supervision::Detached).await?;
        lab::prepare_app(&lab).await?;
        let plan_path = dir.join("plan.toml");
        std::fs::write(&plan_path, lab::lab_plan_toml(&lab)).map_err(|e| lab::LabError::Io {
            path: plan_path.clone(),
            source: e,
        })?;
        Ok::<_, lab::LabError>((lab, plan_path))
    });
    let (lab, plan_path) = match result {
        Ok(v) => v,
        Err(e) => {
            errln!("cutover lab up failed: {e}");
            let _ = std::fs::remove_dir_all(&dir);
            return EXIT_FAILED;
        }
    };
    print_details(&lab, &plan_path);
    let servers = lab.release();
    let state = LabState {
        dir: dir.clone(),
        servers,
        plan: plan_path,
    };
    if let Err(e) = state.save() {
        errln!("cutover lab up: servers are running but the state file could not be written: {e}");
        return EXIT_FAILED;
    }
    EXIT_OK
}

fn print_details(lab: &Lab, plan: &std::path::Path) {
    let root = lab.dir.path();
    outln!("lab is up in {}", root.display());
    outln!(
        "  (passwords and keys are in {}, never printed)",
        root.join("secrets").display()
    );
    for pg in [&lab.pg_source, &lab.pg_target] {
        outln!(
            "  postgresql {:<13} 127.0.0.1:{:<5}  user postgres, password file {}",
            pg.name,
            pg.port,
            pg.password_file.display()
        );
    }
    for m in [&lab.maria_source, &lab.maria_target] {
        outln!(
            "  mariadb    {:<13} 127.0.0.1:{:<5}  user cutover, password file {} (server_id {})",
            m.name,
            m.port,
            m.password_file.display(),
            m.server_id
        );
    }
    outln!(
        "  powerdns   dns 127.0.0.1:{}  api {}  key file {}",
        lab.powerdns.dns_port,
        lab.powerdns.api_url(),
        lab.powerdns.api_key_file.display()
    );
    outln!(
        "  bind9      dns 127.0.0.1:{}  zone {}  tsig key {} ({}), secret file {}",
        lab.bind.port,
        lab::bind::ZONE,
        lab::bind::TSIG_KEY_NAME,
        lab::bind::TSIG_ALGORITHM,
        lab.bind.tsig_secret_file.display()
    );
    outln!(
        "  sshd       127.0.0.1:{}  hosts lab-source, lab-target: ssh -F {} lab-source",
        lab.sshd.port,
        lab.sshd.ssh_config.display()
    );
    outln!("plan: {}", plan.display());
    outln!("next: cutover plan check {}", plan.display());
    outln!("stop: cutover lab down --dir {}", root.display());
}

/// `lab down`.
pub fn down(dir: Option<PathBuf>) -> u8 {
    let dir = dir.unwrap_or_else(default_dir);
    match lab::stop_detached(&dir) {
        Ok(stopped) => {
            outln!(
                "lab in {} is down (stopped: {})",
                dir.display(),
                if stopped.is_empty() {
                    "nothing was running".to_owned()
                } else {
                    stopped.join(", ")
                }
            );
            EXIT_OK
        }
        Err(e) => {
            errln!("cutover lab down: {e}");
            EXIT_FAILED
        }
    }
}
