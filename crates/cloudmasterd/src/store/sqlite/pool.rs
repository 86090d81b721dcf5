//! `pool_members` (store::pool::PoolStore).

use super::SqliteStore;
use crate::store::pool::{MemberIntent, PoolMemberRow, PoolStore};
use crate::store::{Result, StoreError};
use cm_api::ids::DeployableId;
use rusqlite::params;

impl PoolStore for SqliteStore {
    fn pool_members(&self, deployable: DeployableId) -> Result<Vec<PoolMemberRow>> {
        self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT deployable_id, balancer, backend, server, instance_id, addr, state,
                        updated_at
                 FROM pool_members WHERE deployable_id = ?1
                 ORDER BY balancer, backend, server",
            )?;
            let rows = st.query_map([deployable], |r| {
                Ok((
                    PoolMemberRow {
                        deployable_id: r.get(0)?,
                        balancer: r.get(1)?,
                        backend: r.get(2)?,
                        server: r.get(3)?,
                        instance_id: r.get(4)?,
                        addr: r.get(5)?,
                        state: MemberIntent::Ready,
                        updated_at: r.get(7)?,
                    },
                    r.get::<_, String>(6)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (mut m, state) = row?;
                m.state = MemberIntent::parse(&state).ok_or_else(|| {
                    StoreError::Corrupt(format!("pool member {}: state '{state}'", m.server))
                })?;
                out.push(m);
            }
            Ok(out)
        })
    }

    fn put_pool_member(&self, m: &PoolMemberRow) -> Result<()> {
        self.tx(|t| {
            let n = t.execute(
                "INSERT INTO pool_members (deployable_id, balancer, backend, server,
                    instance_id, addr, state, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (balancer, backend, server) DO UPDATE SET
                    instance_id = excluded.instance_id, addr = excluded.addr,
                    state = excluded.state, updated_at = excluded.updated_at
                 WHERE pool_members.deployable_id = excluded.deployable_id",
                params![
                    m.deployable_id,
                    m.balancer,
                    m.backend,
                    m.server,
                    m.instance_id,
                    m.addr,
                    m.state.as_str(),
                    m.updated_at
                ],
            )?;
            if n == 0 {
                return Err(StoreError::Conflict(format!(
                    "server {} of {}/{} belongs to another deployable",
                    m.server, m.balancer, m.backend
                )));
            }
            Ok(())
        })
    }

    fn delete_pool_member(
        &self,
        deployable: DeployableId,
        balancer: &str,
        backend: &str,
        server: &str,
    ) -> Result<bool> {
        self.tx(|t| {
            let n = t.execute(
                "DELETE FROM pool_members
                 WHERE deployable_id = ?1 AND balancer = ?2 AND backend = ?3 AND server = ?4",
                params![deployable, balancer, backend, server],
            )?;
            Ok(n > 0)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cm_api::ids::InstanceId;

    fn row(dep: DeployableId, server: &str, state: MemberIntent) -> PoolMemberRow {
        PoolMemberRow {
            deployable_id: dep,
            balancer: "edge".into(),
            backend: "web".into(),
            server: server.into(),
            instance_id: InstanceId::new_v4(),
            addr: "127.0.0.1:30000".into(),
            state,
            updated_at: 5,
        }
    }

    #[test]
    fn members_are_kept_per_deployable_and_a_name_is_owned_by_one() {
        let s = SqliteStore::in_memory().unwrap();
        let (a, b) = (DeployableId::new_v4(), DeployableId::new_v4());
        s.put_pool_member(&row(a, "cm-a-web-0-1", MemberIntent::Ready))
            .unwrap();
        let mut drained = row(a, "cm-a-web-0-1", MemberIntent::Drain);
        drained.updated_at = 9;
        s.put_pool_member(&drained).unwrap();
        let got = s.pool_members(a).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].state, MemberIntent::Drain);
        assert_eq!(got[0].updated_at, 9);
        // Another deployable cannot take over the name.
        let e = s
            .put_pool_member(&row(b, "cm-a-web-0-1", MemberIntent::Ready))
            .unwrap_err();
        assert!(matches!(e, StoreError::Conflict(_)), "{e}");
        assert!(s.pool_members(b).unwrap().is_empty());
        assert_eq!(s.pool_members(a).unwrap()[0].deployable_id, a);
        assert!(!s
            .delete_pool_member(b, "edge", "web", "cm-a-web-0-1")
            .unwrap());
        assert!(s
            .delete_pool_member(a, "edge", "web", "cm-a-web-0-1")
            .unwrap());
        assert!(s.pool_members(a).unwrap().is_empty());
    }
}
