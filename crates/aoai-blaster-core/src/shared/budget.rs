//! [`SharedBudget`]: an endpoint's budget when its quota is shared through Redis. The local
//! budget keeps its rules (a 429's wait, the charges it learns from replies); the lease held
//! from Redis must have room too, so the processes together stay within the quota.

use std::collections::HashMap;
use std::time::Instant;

use super::quota::{LeaseCharge, LeaseWait, SharedQuota};
use crate::quota::{BudgetSnapshot, Cost, QuotaBudget, QuotaFeedback, Refusal, Reservation};

/// A local budget and the shared quota's lease, both of which must admit a cost.
#[derive(Debug)]
pub struct SharedBudget {
    local: Box<dyn QuotaBudget>,
    quota: SharedQuota,
    /// The lease charge of each reservation in flight (by reservation id), to refund it when
    /// the attempt never reached Azure.
    charges: HashMap<u64, LeaseCharge>,
}

impl SharedBudget {
    /// `local`'s rules, and room in `quota`'s lease.
    pub fn new(mut local: Box<dyn QuotaBudget>, quota: SharedQuota) -> Self {
        local.shared_with_others();
        SharedBudget {
            local,
            quota,
            charges: HashMap::new(),
        }
    }
}

impl QuotaBudget for SharedBudget {
    fn try_reserve(&mut self, now: Instant, cost: Cost) -> Result<Reservation, Refusal> {
        let reservation = self.local.try_reserve(now, cost)?;
        match self.quota.try_charge(now, cost) {
            Ok(charge) => {
                self.charges.insert(reservation.id, charge);
                Ok(reservation)
            }
            Err(wait) => {
                self.local.release(reservation);
                Err(match wait {
                    LeaseWait::Renewal => Refusal::Pending,
                    LeaseWait::NotUntil(at) => Refusal::NotUntil(at),
                    LeaseWait::NeverFits { tokens, capacity } => {
                        Refusal::NeverFits { tokens, capacity }
                    }
                })
            }
        }
    }

    fn settle(&mut self, now: Instant, reservation: Reservation, feedback: &QuotaFeedback) {
        self.charges.remove(&reservation.id);
        self.local.settle(now, reservation, feedback);
    }

    fn release(&mut self, reservation: Reservation) {
        if let Some(charge) = self.charges.remove(&reservation.id) {
            self.quota.refund(charge);
        }
        self.local.release(reservation);
    }

    fn snapshot(&self, now: Instant) -> BudgetSnapshot {
        self.local.snapshot(now)
    }

    fn shared_quota(&mut self) -> Option<&mut SharedQuota> {
        Some(&mut self.quota)
    }
}
