//! The REST API's wire types, shared by the orchestrator (which serves them) and `batonctl`
//! and the tests (which call it): request bodies in [`requests`], answers in [`responses`].
//! Only serde lives here; validation and handlers stay in the server. See docs/api.md.

pub mod requests;
pub mod responses;

pub use requests::{
    BatchRequest, Command, Control, CreateToken, MAX_BULK_REGISTRATIONS, RegisterHost,
    RegisterHosts, SetMaintenance, SetWindows, StartUpgrade, StrategyKind, StrategyRequest,
};
pub use responses::{
    Counts, CreatedToken, ErrorBody, EventInfo, FleetSnapshot, Health, HostInfo, HostRemoved,
    RegisterAnswer, Registered, RegisteredHost, TokenInfo, UpgradeEvent, UpgradeInfo,
};
