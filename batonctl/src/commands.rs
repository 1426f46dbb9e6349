//! Running a parsed command line: each subcommand calls the API (or the Docker Engine) and
//! prints the answer as `-o` says ([`output`](crate::output): JSON for single records and
//! tables for lists by default), progress lines for `upgrade watch`.

use baton_protocol::manifest::{InstallPolicy, default_install_allow};

use baton_protocol::api::Command as ApiCommand;

use crate::bundle::{self, binaries::default_static_binary};
use crate::cli::{
    self, BundleCommand, Cli, Command, GroupCommand, HostCommand, TokenCommand, UpgradeCommand,
    UpgradeControl, WindowCommand,
};
use crate::client::ApiClient;
use crate::display;
use crate::error::CtlError;
use crate::keys;
use crate::output::{self, Output};
use crate::registrations;
use crate::settings;
use crate::watch::watch;

/// Prints a record as `output` says (JSON by default; no table).
fn print<T: serde::Serialize>(output: Option<Output>, value: &T) -> Result<(), CtlError> {
    println!("{}", output::record(output, value, None)?);
    Ok(())
}

/// Runs the command; `Ok(false)` when it worked but reports failure (an upgrade that did not
/// succeed).
pub async fn run(cli: Cli) -> Result<bool, CtlError> {
    let out = cli.output;
    match cli.command {
        Command::Version => version(&cli.connection, out).await?,
        Command::Bundle(command) => bundle(command, out).await?,
        Command::Host(command) => host(&settings::client(&cli.connection)?, command, out).await?,
        Command::Group(GroupCommand::Maintenance {
            group,
            mode,
            reason,
            reboot,
        }) => {
            let api = settings::client(&cli.connection)?;
            let set = cli::maintenance(mode, reason, reboot);
            print(out, &api.group_maintenance(&group, &set).await?)?;
        }
        Command::Window(command) => {
            let api = settings::client(&cli.connection)?;
            let windows = match command {
                WindowCommand::Set(set) => {
                    let group = set.group.clone();
                    api.set_windows(group.as_deref(), &set.request()).await?
                }
                WindowCommand::Get { group } => api.windows(group.as_deref()).await?,
                WindowCommand::Clear { group } => api.clear_windows(group.as_deref()).await?,
            };
            print(out, &windows)?;
        }
        Command::Upgrade(command) => {
            return upgrade(&settings::client(&cli.connection)?, command, out).await;
        }
        Command::Token(command) => {
            token(&settings::client(&cli.connection)?, &command, out).await?;
        }
        Command::Completion { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command, "batonctl", &mut script);
            // A reader that stops early (`| head`) is not an error.
            let _ = std::io::Write::write_all(&mut std::io::stdout(), &script);
        }
        Command::Manpages { dir } => {
            for page in crate::manpages::write(&dir)? {
                println!("{}", page.display());
            }
        }
        Command::Key(command) => keys::run(command)?,
    }
    Ok(true)
}

/// `batonctl version`: this build's version, then the answering server's; the client's is
/// printed even when the server cannot be asked.
async fn version(connection: &cli::Connection, out: Option<Output>) -> Result<(), CtlError> {
    let server = async {
        settings::client(connection)?
            .health()
            .await
            .map_err(CtlError::ServerVersion)
    };
    let server = server.await;
    let versions = serde_json::json!({
        "client": {"version": crate::VERSION},
        "server": server.as_ref().ok(),
    });
    match out {
        Some(Output::Json | Output::Yaml) => print(out, &versions)?,
        _ => {
            println!("client: batonctl {}", crate::VERSION);
            if let Ok(h) = &server {
                println!(
                    "server: baton-orchestrator {} (replica {}, {})",
                    h.version, h.replica, h.role
                );
            }
        }
    }
    server.map(|_| ())
}

async fn token(
    api: &ApiClient,
    command: &TokenCommand,
    out: Option<Output>,
) -> Result<(), CtlError> {
    match command {
        TokenCommand::Create { name, role } => {
            let created = api
                .create_token(&baton_protocol::api::CreateToken {
                    name: name.clone(),
                    role: (*role).into(),
                })
                .await?;
            // stdout holds the token and nothing else, for `> file`; what it is goes to
            // stderr.
            eprintln!(
                "token {} (role {}) created; it is shown only now",
                created.info.name, created.info.role
            );
            println!("{}", created.token);
        }
        TokenCommand::Ls => println!(
            "{}",
            output::list(out, &api.tokens().await?, |t, _| display::tokens_table(t))?
        ),
        TokenCommand::Revoke { name } => print(out, &api.revoke_token(name).await?)?,
    }
    Ok(())
}

async fn host(api: &ApiClient, command: HostCommand, out: Option<Output>) -> Result<(), CtlError> {
    match command {
        HostCommand::Add(a) => match a.from_file.clone() {
            Some(file) => {
                let name = file.display().to_string();
                let text = if name == "-" {
                    std::io::read_to_string(std::io::stdin())
                } else {
                    std::fs::read_to_string(&file)
                }
                .map_err(|e| CtlError::Registrations {
                    file: name.clone(),
                    what: e.to_string(),
                })?;
                let entries = registrations::parse(&name, &text)?;
                print(out, &registrations::register(api, &entries).await?)
            }
            None => print(out, &api.register(&a.request()).await?),
        },
        HostCommand::Ls => {
            println!(
                "{}",
                output::list(out, &api.hosts().await?, display::hosts_table)?
            );
            Ok(())
        }
        HostCommand::Show { host } => {
            let table: &output::Table<_> = &display::hosts_table;
            let shown = output::record(out, &api.host(&host).await?, Some(table))?;
            println!("{shown}");
            Ok(())
        }
        HostCommand::Maintenance {
            host,
            mode,
            reason,
            reboot,
        } => print(
            out,
            &api.host_maintenance(&host, &cli::maintenance(mode, reason, reboot))
                .await?,
        ),
    }
}

async fn upgrade(
    api: &ApiClient,
    command: UpgradeCommand,
    out: Option<Output>,
) -> Result<bool, CtlError> {
    let control = |c: UpgradeControl, command| async move {
        print(out, &api.command(&c.id, command, c.reason).await?)
    };
    match command {
        UpgradeCommand::Start(s) => {
            let started = api.start(&s.request()).await?;
            if s.watch {
                let id = started.upgrade.id.to_string();
                return watch(api, &id, s.interval).await;
            }
            print(out, &started)?;
        }
        UpgradeCommand::Ls => println!(
            "{}",
            output::list(out, &api.upgrades().await?, display::upgrades_table)?
        ),
        UpgradeCommand::Show { id, events } => {
            let table: &output::Table<_> = &display::upgrades_table;
            println!(
                "{}",
                output::record(out, &api.upgrade(&id).await?, Some(table))?
            );
            if events {
                for e in api.events(&id).await? {
                    let host = e.event.host.map(|h| format!(" {h}")).unwrap_or_default();
                    println!(
                        "{} #{} {}{host}: {}",
                        e.event.at, e.seq, e.event.kind, e.event.message
                    );
                }
            }
        }
        UpgradeCommand::Pause(c) => control(c, ApiCommand::Pause).await?,
        UpgradeCommand::Resume(c) => control(c, ApiCommand::Resume).await?,
        UpgradeCommand::Abort(c) => control(c, ApiCommand::Abort).await?,
        UpgradeCommand::Watch { id, interval } => {
            let id = match id {
                Some(id) => id,
                None => api
                    .upgrades()
                    .await?
                    .into_iter()
                    .find(|u| u.active)
                    .map(|u| u.upgrade.id.to_string())
                    .ok_or(CtlError::NoActiveUpgrade)?,
            };
            return watch(api, &id, interval).await;
        }
    }
    Ok(true)
}

async fn bundle(command: BundleCommand, out: Option<Output>) -> Result<(), CtlError> {
    let docker = bundle::connect().await?;
    match command {
        BundleCommand::Build(args) => {
            let signing_key = args
                .sign
                .as_deref()
                .map(|k| keys::signing_key(k, &args.signing.passphrase))
                .transpose()?;
            let allow = if args.allow.is_empty() {
                default_install_allow()
            } else {
                args.allow
            };
            let install =
                InstallPolicy::new(("--allow", allow), ("--allow-setuid", args.allow_setuid))
                    .map_err(|source| {
                        CtlError::Build(bundle::BundleError::Manifest {
                            path: args.dir.clone(),
                            source,
                        })
                    })?;
            let options = bundle::BuildOptions {
                dir: args.dir,
                tag: args.tag,
                agent: args
                    .agent
                    .unwrap_or_else(|| default_static_binary("baton-agent")),
                downloader: args
                    .downloader
                    .unwrap_or_else(|| default_static_binary("baton-downloader")),
                push: args.push,
                check_agent_version: !args.no_agent_version_check,
                manifest_out: args.manifest_out,
                install,
                trusted_keys: keys::bundle_trusted_keys(&args.trust_keys, signing_key.as_ref())?,
            };
            let built = bundle::build(&docker, &options, &bundle::Stderr)
                .await
                .map_err(CtlError::Build)?;
            if let (Some(key), Some(pinned)) = (&signing_key, &built.pushed) {
                let expires = keys::expiry(&args.signing)?;
                bundle::sign(&docker, pinned, key, expires, &bundle::Stderr)
                    .await
                    .map_err(|e| CtlError::Signing("sign", e))?;
            }
            // stdout: the reference to use from now on.
            println!("{}", built.pushed.as_deref().unwrap_or(&built.tag));
        }
        BundleCommand::Sign { image, key, sign } => {
            let key = keys::signing_key(&key, &sign.passphrase)?;
            let expires = keys::expiry(&sign)?;
            let signed = bundle::sign(&docker, &image, &key, expires, &bundle::Stderr)
                .await
                .map_err(|e| CtlError::Signing("sign", e))?;
            println!("{}", signed.pinned);
        }
        BundleCommand::Verify { image, keys: files } => {
            let trusted = baton_protocol::signing::TrustedKeys::read_files(&files)
                .map_err(|e| CtlError::Signing("verify", e.into()))?;
            let (pinned, signed) = bundle::verify(&docker, &image, &trusted, &bundle::Stderr)
                .await
                .map_err(|e| CtlError::Signing("verify", e))?;
            eprintln!(
                "{pinned}: bundle {} signed by key {}, valid until {}",
                signed.version, signed.key_id, signed.expires
            );
            print(out, &signed)?;
        }
        BundleCommand::Inspect { image } => {
            let manifest = bundle::read_manifest(&docker, &image, &bundle::Stderr)
                .await
                .map_err(CtlError::Inspect)?;
            println!("{}", String::from_utf8_lossy(&manifest.to_json()));
        }
    }
    Ok(())
}
