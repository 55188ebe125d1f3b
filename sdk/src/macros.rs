//! The SDK's macros: [`crate::export_plugin!`], and the log macros that take
//! format arguments ([`crate::info!`] and friends).

/// Exports a [`Plugin`](crate::Plugin) implementation as the component's
/// `operation` world.
///
/// Use it once per plugin crate: `opal_sdk::export_plugin!(MyPlugin);`. It
/// also captures the crate's name, version and description for the fields
/// `Plugin::info` leaves empty. On targets other than wasm it expands to
/// nothing, so the crate still builds and unit-tests natively.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        #[cfg(target_family = "wasm")]
        const _: () = {
            const CRATE: $crate::export::CrateMeta = $crate::export::CrateMeta {
                name: ::std::env!("CARGO_PKG_NAME"),
                version: ::std::env!("CARGO_PKG_VERSION"),
                description: ::std::env!("CARGO_PKG_DESCRIPTION"),
            };
            struct __OpalExport;
            impl $crate::bindings::Guest for __OpalExport {
                fn describe() -> $crate::bindings::opal::plugin::types::PluginInfo {
                    $crate::export::describe::<$plugin>(&CRATE)
                }
                fn validate(
                    params: ::std::string::String,
                ) -> ::std::result::Result<(), ::std::vec::Vec<$crate::bindings::opal::plugin::types::FieldError>>
                {
                    $crate::export::validate::<$plugin>(&params)
                }
                fn run(
                    target: ::std::string::String,
                    params: ::std::string::String,
                ) -> ::std::result::Result<
                    $crate::bindings::opal::plugin::types::Outcome,
                    $crate::bindings::opal::plugin::types::RunError,
                > {
                    $crate::export::run::<$plugin>(&target, &params)
                }
            }
    $crate::bindings::__export_operation!(__OpalExport with_types_in $crate::bindings);
        };
    };
}

/// Logs at `debug`: `debug!(ctx, "retrying {host} in {secs} s")`.
#[macro_export]
macro_rules! debug {
    ($ctx:expr, $($arg:tt)+) => {
        $ctx.log($crate::Level::Debug, &::std::format!($($arg)+))
    };
}

/// Logs at `info`: `info!(ctx, "issued {n} certificates")`.
#[macro_export]
macro_rules! info {
    ($ctx:expr, $($arg:tt)+) => {
        $ctx.log($crate::Level::Info, &::std::format!($($arg)+))
    };
}

/// Logs at `warn`: `warn!(ctx, "{host} answered slowly")`.
#[macro_export]
macro_rules! warn {
    ($ctx:expr, $($arg:tt)+) => {
        $ctx.log($crate::Level::Warn, &::std::format!($($arg)+))
    };
}

/// Logs at `error`: `error!(ctx, "cannot reach {host}: {e}")`.
#[macro_export]
macro_rules! error {
    ($ctx:expr, $($arg:tt)+) => {
        $ctx.log($crate::Level::Error, &::std::format!($($arg)+))
    };
}
