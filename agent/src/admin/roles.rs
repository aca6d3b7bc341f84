//! The spec's role table and namespace scoping.
//!
//! | Role   | Monitors | Incidents | Settings | Users |
//! |--------|----------|-----------|----------|-------|
//! | admin  | CRUD     | CRUD      | CRUD     | CRUD  |
//! | editor | CRUD     | CRUD      | Read     | Read  |
//! | viewer | Read     | Read      | Read     | -     |
//!
//! Silences count as incidents' area (they change what alerting does about them);
//! metrics, the OpenAPI document, notification deliveries and providers (a test send is a
//! change of settings) as settings. The audit log is the admin's alone (its own area).

pub use kubekuma_crds::auth::Role;

/// What a route touches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Area {
    /// Monitors and their heartbeats.
    Monitors,
    /// Incidents, their updates, silences.
    Incidents,
    /// Settings, metrics, notification providers and their deliveries.
    Settings,
    /// Users and API keys.
    Users,
    /// The audit log (admins only).
    Audit,
}

/// Read or change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// GET.
    Read,
    /// Create, update, delete.
    Write,
}

/// Whether `role` may `access` `area`.
pub fn allowed(role: Role, area: Area, access: Access) -> bool {
    match (role, area, access) {
        (Role::Admin, _, _) => true,
        (_, Area::Audit, _) => false,
        (Role::Editor, Area::Monitors | Area::Incidents, _) => true,
        (Role::Editor, Area::Settings | Area::Users, Access::Read) => true,
        (Role::Editor, _, Access::Write) => false,
        (Role::Viewer, Area::Users, _) => false,
        (Role::Viewer, _, Access::Read) => true,
        (Role::Viewer, _, Access::Write) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_table() {
        use Access::*;
        use Area::*;
        let table = [
            (Role::Admin, [true; 8]),
            (
                Role::Editor,
                [true, true, true, true, true, false, true, false],
            ),
            (
                Role::Viewer,
                [true, false, true, false, true, false, false, false],
            ),
        ];
        for (role, expect) in table {
            let got = [
                allowed(role, Monitors, Read),
                allowed(role, Monitors, Write),
                allowed(role, Incidents, Read),
                allowed(role, Incidents, Write),
                allowed(role, Settings, Read),
                allowed(role, Settings, Write),
                allowed(role, Users, Read),
                allowed(role, Users, Write),
            ];
            assert_eq!(got, expect, "{role:?}");
            let audit = role == Role::Admin;
            assert_eq!(allowed(role, Audit, Read), audit, "{role:?}");
            assert_eq!(allowed(role, Audit, Write), audit, "{role:?}");
        }
    }
}
