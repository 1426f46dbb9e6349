//! Running a parsed command line: each subcommand calls the API (or the Docker Engine) and
//! prints the answer — JSON for single records, tables for lists, progress lines for
//! `upgrade watch`.

use baton_protocol::manifest::{InstallPolicy, default_install_allow};
use std::time::Duration;

use baton_protocol::api::Command as ApiCommand;

use crate::bundle::{self, binaries::default_static_binary};
use crate::cli::{
    self, BundleCommand, Cli, Command, HostCommand, TokenCommand, UpgradeCommand, UpgradeControl,
};
use crate::client::ApiClient;
use crate::display;
use crate::error::CtlError;
use crate::keys;
use crate::settings;
use crate::watch::watch;

/// Interval of `upgrade start --watch`.
const START_WATCH_INTERVAL: Duration = Duration::from_secs(1);

fn pretty<T: serde::Serialize>(value: &T) -> Result<(), CtlError> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Runs the command; `Ok(false)` when it worked but reports failure (an upgrade that did not
/// succeed).
pub async fn run(cli: Cli) -> Result<bool, CtlError> {
    match cli.command {
        Command::Version => println!("batonctl {}", crate::VERSION),
        Command::Bundle(command) => bundle(command).await?,
        Command::Host(command) => host(&settings::client(&cli.connection)?, command).await?,
        Command::Upgrade(command) => {
            return upgrade(&settings::client(&cli.connection)?, command).await;
        }
        Command::Token(command) => token(&settings::client(&cli.connection)?, &command).await?,
        Command::Key(command) => keys::run(command)?,
    }
    Ok(true)
}

async fn token(api: &ApiClient, command: &TokenCommand) -> Result<(), CtlError> {
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
        TokenCommand::Ls => println!("{}", display::tokens_table(&api.tokens().await?)),
        TokenCommand::Revoke { name } => pretty(&api.revoke_token(name).await?)?,
    }
    Ok(())
}

async fn host(api: &ApiClient, command: HostCommand) -> Result<(), CtlError> {
    match command {
        HostCommand::Add(a) => pretty(&api.register(&a.request()).await?),
        HostCommand::Ls => {
            println!("{}", display::hosts_table(&api.hosts().await?));
            Ok(())
        }
        HostCommand::Show { host } => pretty(&api.host(&host).await?),
        HostCommand::Maintenance {
            host,
            mode,
            reason,
            reboot,
        } => pretty(
            &api.host_maintenance(&host, &cli::maintenance(mode, reason, reboot))
                .await?,
        ),
    }
}

async fn upgrade(api: &ApiClient, command: UpgradeCommand) -> Result<bool, CtlError> {
    let control = |c: UpgradeControl, command| async move {
        pretty(&api.command(&c.id, command, c.reason).await?)
    };
    match command {
        UpgradeCommand::Start(s) => {
            let started = api.start(&s.request()).await?;
            if s.watch {
                let id = started.upgrade.id.to_string();
                return watch(api, &id, START_WATCH_INTERVAL).await;
            }
            pretty(&started)?;
        }
        UpgradeCommand::Ls => println!("{}", display::upgrades_table(&api.upgrades().await?)),
        UpgradeCommand::Show { id, events } => {
            pretty(&api.upgrade(&id).await?)?;
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

async fn bundle(command: BundleCommand) -> Result<(), CtlError> {
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
            pretty(&signed)?;
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
