//! nginx: the route is an `upstream NAME { server ADDRESS; }` block kept in its own include
//! file. A switch rewrites that file atomically (a temporary file renamed over it; the
//! previous content kept beside it as `FILE.cutover-previous`), asks `nginx -t` whether the
//! whole configuration still loads (if not, the previous file is put back and nothing is
//! reloaded), then `nginx -s reload`: new connections go to the new address, established ones
//! finish on the old. Reading parses the include file (open-source nginx cannot say what its
//! running configuration holds; the plan's checks prove what answers through it).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Adapter, ProxyError, Route};

/// One upstream block in one include file.
pub struct Nginx {
    include: PathBuf,
    upstream: String,
    program: PathBuf,
    config: Option<PathBuf>,
    prefix: Option<PathBuf>,
    timeout: Duration,
}

/// The address of the one `server` line of upstream `name` in `text`, with the byte range of
/// the address (for a rewrite that keeps the line's other parameters).
pub fn find_server(text: &str, name: &str) -> Result<(SocketAddr, std::ops::Range<usize>), String> {
    let mut rest = text;
    let mut offset = 0;
    let block = loop {
        let Some(at) = rest.find("upstream") else {
            return Err(format!("no `upstream {name}` block"));
        };
        let after = &rest[at + "upstream".len()..];
        let trimmed = after.trim_start();
        let word_end = trimmed
            .find(|c: char| c.is_whitespace() || c == '{')
            .unwrap_or(trimmed.len());
        if &trimmed[..word_end] == name {
            let open = after
                .find('{')
                .ok_or(format!("`upstream {name}` has no `{{`"))?;
            let start = offset + at + "upstream".len() + open + 1;
            let close = text[start..]
                .find('}')
                .ok_or(format!("`upstream {name}` has no `}}`"))?;
            break start..start + close;
        }
        offset += at + "upstream".len();
        rest = &text[offset..];
    };
    let body = &text[block.clone()];
    let mut servers = Vec::new();
    let mut pos = 0;
    for statement in body.split(';') {
        let lead = statement.len() - statement.trim_start().len();
        let trimmed = statement.trim_start();
        if let Some(args) = trimmed.strip_prefix("server")
            && args.starts_with(char::is_whitespace)
        {
            let addr_lead = args.len() - args.trim_start().len();
            let addr = args.split_whitespace().next().unwrap_or("");
            let at = block.start + pos + lead + "server".len() + addr_lead;
            servers.push((addr.to_owned(), at..at + addr.len()));
        }
        pos += statement.len() + 1;
    }
    match servers.as_slice() {
        [(addr, range)] => addr
            .parse::<SocketAddr>()
            .map(|a| (a, range.clone()))
            .map_err(|_| {
                format!("`server {addr}` in `upstream {name}` is not an `ip:port` address")
            }),
        [] => Err(format!("`upstream {name}` has no `server` line")),
        more => Err(format!(
            "`upstream {name}` has {} `server` lines; cutover switches an upstream of exactly one",
            more.len()
        )),
    }
}

impl Nginx {
    /// The upstream `upstream` in `include`, reloaded with `program` (`-c config`, `-p prefix`).
    pub fn new(
        include: &Path,
        upstream: &str,
        program: &Path,
        config: Option<&Path>,
        prefix: Option<&Path>,
        timeout: Duration,
    ) -> Nginx {
        Nginx {
            include: include.to_owned(),
            upstream: upstream.to_owned(),
            program: program.to_owned(),
            config: config.map(Path::to_owned),
            prefix: prefix.map(Path::to_owned),
            timeout,
        }
    }

    fn refused(&self, message: impl Into<String>, fix: impl Into<String>) -> ProxyError {
        ProxyError::Refused {
            proxy: self.describe(),
            message: message.into(),
            fix: fix.into(),
        }
    }

    /// `nginx [-p prefix] [-c config] ARGS`, bounded; Ok(()) when it exits 0, else its stderr.
    async fn nginx(&self, args: &[&str]) -> Result<(), String> {
        self.nginx_output(args).await.map(|_| ())
    }

    /// As [`Nginx::nginx`], with what it printed (stdout, stderr) when it exits 0.
    async fn nginx_output(&self, args: &[&str]) -> Result<(String, String), String> {
        let mut argv = vec![self.program.display().to_string()];
        if let Some(p) = &self.prefix {
            argv.extend(["-p".to_owned(), p.display().to_string()]);
        }
        if let Some(c) = &self.config {
            argv.extend(["-c".to_owned(), c.display().to_string()]);
        }
        argv.extend(args.iter().map(|a| (*a).to_owned()));
        let ended = crate::child::run(&argv, [], self.timeout.max(Duration::from_secs(30))).await?;
        if ended.code == Some(0) {
            Ok((ended.stdout, ended.stderr))
        } else {
            Err(crate::child::tail(ended.stderr.trim(), 5))
        }
    }

    /// The running master's pid: the configuration's `pid` directive (as `nginx -T` prints
    /// it), else the compiled-in `--pid-path`; a relative path is under the prefix. `None`
    /// when it cannot be found (the reload is then not confirmed, and the switch says so).
    async fn master(&self, dump: &str) -> Option<i32> {
        let directive = pid_directive(dump).map(PathBuf::from);
        // The compiled-in defaults (`nginx -V`) only when the configuration leaves them open.
        let needs_defaults = directive
            .as_ref()
            .is_none_or(|p| p.is_relative() && self.prefix.is_none());
        let version = if needs_defaults {
            self.nginx_output(&["-V"]).await.ok()?.1
        } else {
            String::new()
        };
        let option = |name: &str| {
            version
                .split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .map(PathBuf::from)
        };
        let path = directive.or_else(|| option("--pid-path="))?;
        let path = if path.is_relative() {
            self.prefix
                .clone()
                .or_else(|| option("--prefix="))?
                .join(path)
        } else {
            path
        };
        std::fs::read_to_string(path).ok()?.trim().parse().ok()
    }

    /// Waits until every worker that accepts connections was started by the reload (the
    /// previous ones are gone or shutting down: they accept nothing more). nginx's master
    /// starts the new workers and tells the old ones to stop about 100 ms after the signal;
    /// until then the old configuration still answers new connections.
    async fn confirm_reload(
        &self,
        master: i32,
        before: &[i32],
        to: SocketAddr,
    ) -> Result<(), ProxyError> {
        let wait = self.timeout.max(Duration::from_secs(5));
        let started = std::time::Instant::now();
        loop {
            let now = accepting_workers(master);
            if !now.is_empty() && now.iter().all(|p| !before.contains(p)) {
                return Ok(());
            }
            if started.elapsed() >= wait {
                return Err(self.refused(
                    format!(
                        "nginx was told to reload, but after {} ms its workers still run the previous configuration (the file points at {to}): a reload can fail where `nginx -t` passed, e.g. an address already in use",
                        wait.as_millis()
                    ),
                    "read nginx's error log, fix what it names and reload it by hand, then resume the run",
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn text(&self) -> Result<String, ProxyError> {
        std::fs::read_to_string(&self.include).map_err(|e| {
            self.refused(
                format!("cannot read {}: {e}", self.include.display()),
                format!(
                    "keep `upstream {} {{ server ADDRESS; }}` in its own file and `include` it from nginx.conf",
                    self.upstream
                ),
            )
        })
    }

    fn write_atomically(&self, text: &str) -> Result<(), ProxyError> {
        let tmp = self.include.with_extension("cutover-new");
        let write = std::fs::write(&tmp, text)
            .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
            .and_then(|()| std::fs::rename(&tmp, &self.include));
        write.map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            self.refused(
                format!("cannot write {}: {e}", self.include.display()),
                "check the directory's permissions and free space",
            )
        })
    }
}

#[async_trait::async_trait]
impl Adapter for Nginx {
    fn describe(&self) -> String {
        format!(
            "nginx {} upstream {}",
            self.include.display(),
            self.upstream
        )
    }

    async fn check_access(&self) -> Result<(), ProxyError> {
        self.nginx(&["-t", "-q"]).await.map_err(|e| {
            self.refused(
                format!("`nginx -t` fails on the current configuration: {e}"),
                "fix nginx's configuration first: cutover tests it before every reload",
            )
        })
    }

    async fn read(&self) -> Result<Route, ProxyError> {
        let text = self.text()?;
        let (address, _) = find_server(&text, &self.upstream).map_err(|e| {
            self.refused(
                format!("{}: {e}", self.include.display()),
                format!(
                    "keep exactly `upstream {} {{ server ADDRESS; }}` (other parameters may follow the address) in that file",
                    self.upstream
                ),
            )
        })?;
        Ok(Route {
            address,
            state: "as the include file says".to_owned(),
        })
    }

    async fn point(&self, to: SocketAddr) -> Result<(), ProxyError> {
        let previous = self.text()?;
        let (_, range) = find_server(&previous, &self.upstream)
            .map_err(|e| self.refused(e, "correct the include file"))?;
        let mut next = previous.clone();
        next.replace_range(range, &to.to_string());
        let kept = self.include.with_extension("cutover-previous");
        std::fs::write(&kept, &previous).map_err(|e| {
            self.refused(
                format!("cannot keep the previous file as {}: {e}", kept.display()),
                "check the directory's permissions and free space",
            )
        })?;
        self.write_atomically(&next)?;
        // `-T` tests like `-t` and prints the configuration it tested (where the pid is).
        let dump = match self.nginx_output(&["-T", "-q"]).await {
            Ok((dump, _)) => dump,
            Err(e) => {
                self.write_atomically(&previous)?;
                return Err(self.refused(
                    format!("`nginx -t` refused the new configuration, so nothing was reloaded and the previous file is back: {e}"),
                    "fix what nginx names, then resume the run",
                ));
            }
        };
        let master = self.master(&dump).await;
        let before = master.map(accepting_workers).unwrap_or_default();
        self.nginx(&["-s", "reload"]).await.map_err(|e| {
            self.refused(
                format!("`nginx -s reload` failed (the file points at {to}): {e}"),
                "reload nginx by hand, then resume the run",
            )
        })?;
        match master {
            Some(master) if !before.is_empty() => self.confirm_reload(master, &before, to).await,
            _ => {
                tracing::warn!(
                    proxy = %self.describe(),
                    "nginx's master or its workers were not found, so the reload is not confirmed: the plan's checks must prove it"
                );
                Ok(())
            }
        }
    }
}

/// The value of the top-level `pid` directive in `nginx -T`'s dump, if any.
fn pid_directive(dump: &str) -> Option<String> {
    dump.lines().find_map(|line| {
        let rest = line.trim().strip_prefix("pid")?;
        if !rest.starts_with(char::is_whitespace) {
            return None;
        }
        let value = rest.trim().strip_suffix(';')?.trim();
        Some(value.trim_matches(|c| c == '"' || c == '\'').to_owned())
    })
}

/// The children of `master` that are nginx workers accepting connections (titled
/// `nginx: worker process`, not `... is shutting down`), read from `/proc`.
fn accepting_workers(master: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`: comm may hold spaces and parentheses.
        let parent = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<i32>().ok());
        if parent != Some(master) {
            continue;
        }
        let Ok(title) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let title = String::from_utf8_lossy(&title);
        if title.starts_with("nginx: worker process") && !title.contains("shutting down") {
            found.push(pid);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_one_server_of_the_named_upstream_is_found_and_its_address_replaced_alone() {
        let text = "upstream other { server 10.0.0.9:80; }\n# the app\nupstream app {\n    server 127.0.0.1:8001 max_fails=3 fail_timeout=5s;\n    keepalive 8;\n}\n";
        let (addr, range) = find_server(text, "app").unwrap();
        assert_eq!(addr, "127.0.0.1:8001".parse().unwrap());
        let mut next = text.to_owned();
        next.replace_range(range, "127.0.0.1:8002");
        assert!(next.contains("server 127.0.0.1:8002 max_fails=3 fail_timeout=5s;"));
        assert!(next.contains("upstream other { server 10.0.0.9:80; }"));
        assert!(
            find_server(text, "nope")
                .unwrap_err()
                .contains("no `upstream nope`")
        );
        let two = "upstream app { server 127.0.0.1:1; server 127.0.0.1:2; }";
        assert!(
            find_server(two, "app")
                .unwrap_err()
                .contains("2 `server` lines")
        );
        let host = "upstream app { server app.internal:80; }";
        assert!(
            find_server(host, "app")
                .unwrap_err()
                .contains("not an `ip:port`")
        );
    }

    #[test]
    fn the_pid_directive_is_read_from_the_dump_and_others_like_it_are_not() {
        let dump = "# configuration file /etc/nginx/nginx.conf:\n# pid /nope.pid;\nuser www-data;\npidfile x;\n  pid   /run/nginx.pid ;\n";
        assert_eq!(pid_directive(dump).as_deref(), Some("/run/nginx.pid"));
        assert_eq!(
            pid_directive("pid \"logs/n.pid\";").as_deref(),
            Some("logs/n.pid")
        );
        assert_eq!(pid_directive("events {}\n"), None);
    }
}
