//! The Baton host agent (updater-daemon): watches its host's keys in etcd and applies what
//! it is told, reporting back through etcd.
