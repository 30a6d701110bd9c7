//! Merging news: the precedence rule, decided once, and how an update changes the table.
//!
//! [`supersedes`] is SWIM's precedence ("is this news newer?"), the only ordering of
//! incarnations and states in the core and the behaviour (the simulator's invariant checks keep
//! their own on purpose, to check it). [`Membership::decide`] applies it to one update and the
//! member's record; [`Membership::apply`] carries the decision out, and [`Membership::effect`]
//! tells a caller (the admission filter of the libp2p behaviour) what it would be, so that
//! neither has to repeat the rule.

use std::sync::Arc;
use std::time::Instant;

use super::{Event, Membership, Status};
use crate::Identity;
use crate::message::{Address, Credential, Payload, State, Update};

/// What applying an update would do to the member it names, as told by
/// [`Membership::effect`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Effect {
    /// Nothing: the update is malformed, no newer than what we hold, suspects a member we do not
    /// hold (or hold as dead or departed), repeats a confirmation of a suspicion already counted,
    /// or names a new member while the table is full (counted in
    /// [`Stats::members_dropped`](crate::Stats::members_dropped)).
    Ignored,
    /// The member becomes live: it was unknown, dead or departed and the update says it is alive
    /// at a newer incarnation. The core reports it as [`Event::Joined`].
    Revives,
    /// The update changes what we hold about the member without making it live again: it
    /// suspects, kills or marks departed a live member, refutes a suspicion or raises the
    /// incarnation of a live member, counts a new independent confirmation of its suspicion,
    /// records a newer death or departure of a member already gone, or records the death or
    /// departure of a member we did not know (a tombstone, so that older news cannot revive it).
    Changes,
    /// The update names us. We are not in our own table: applying it refutes it (raising our
    /// incarnation) or queues our current state again, so a filter must always let it through.
    Local,
}

/// What [`Membership::apply`] does with one update: [`Effect`] in the detail `apply` needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Ignore,
    /// News of a member we do not hold while the table is full: dropped and counted.
    TableFull,
    Local,
    /// A member we did not know, alive.
    Join,
    /// A member we did not know, dead or departed: a tombstone.
    Tombstone,
    /// A dead or departed member alive again at a newer incarnation.
    Revive,
    /// An alive member at a newer incarnation.
    Refresh,
    /// A suspect member alive at a newer incarnation.
    Refute,
    /// A live member suspected at its incarnation or a newer one.
    Suspect,
    /// One more independent suspector of a suspicion we hold at the same incarnation.
    Confirm,
    /// A live member dead or departed.
    Kill,
    /// A member already gone, dead or departed at a newer incarnation or a later state.
    Bury,
}

impl Decision {
    fn effect(self) -> Effect {
        match self {
            Decision::Ignore | Decision::TableFull => Effect::Ignored,
            Decision::Local => Effect::Local,
            Decision::Join | Decision::Revive => Effect::Revives,
            Decision::Tombstone
            | Decision::Refresh
            | Decision::Refute
            | Decision::Suspect
            | Decision::Confirm
            | Decision::Kill
            | Decision::Bury => Effect::Changes,
        }
    }
}

/// SWIM's precedence rule: news `(incarnation, state)` about a member wins over what is held when
/// its incarnation is newer or, at the same incarnation, its state comes later in [`State`]'s
/// order (alive, suspect, dead, left). Every precedence question goes through here.
pub(crate) fn supersedes(news: (u64, State), held: (u64, State)) -> bool {
    news > held
}

impl<T: Identity> Membership<T> {
    /// What applying `u` would do to the member it names; `push_pull` says whether `u` comes
    /// from a push-pull's member list (where "dead" about a live member only suspects it). This
    /// is the decision [`handle_message`](Self::handle_message) makes for every update, so a
    /// caller filtering news (for instance to keep members it has not verified out) stays in
    /// step with the core. Updates about ourselves are [`Effect::Local`].
    pub fn effect(&self, u: &Update<T>, push_pull: bool) -> Effect {
        self.decide(u, push_pull).effect()
    }

    /// The one place where news meets the record it is about.
    fn decide(&self, u: &Update<T>, push_pull: bool) -> Decision {
        if u.check().is_err() {
            return Decision::Ignore;
        }
        if u.member == self.me {
            return Decision::Local;
        }
        let Some((incarnation, state)) = self.members.get(&u.member) else {
            return match u.state {
                // Suspicion of a member we never heard of is ignored (as in memberlist): we could
                // not probe it, and its own refutation or death will reach us.
                State::Suspect => Decision::Ignore,
                _ if self.members.len() >= self.config.max_members.get() => Decision::TableFull,
                State::Alive => Decision::Join,
                State::Dead | State::Left => Decision::Tombstone,
            };
        };
        let live = matches!(state, State::Alive | State::Suspect);
        // A push-pull lists a whole view, which may be stale: its "dead" only suspects a member
        // we hold live (memberlist's rule), so that the member can still refute.
        let news = if push_pull && live && u.state == State::Dead {
            State::Suspect
        } else {
            u.state
        };
        if news == State::Suspect && state == State::Suspect && u.incarnation == incarnation {
            // Invariant: `check` passed, so suspect and dead news name who suspects.
            let Some(by) = &u.by else {
                return Decision::Ignore;
            };
            return if self.counts_as_confirmation(&u.member, by) {
                Decision::Confirm
            } else {
                Decision::Ignore
            };
        }
        if !supersedes((u.incarnation, news), (incarnation, state)) {
            return Decision::Ignore;
        }
        match (news, state) {
            (State::Alive, State::Alive) => Decision::Refresh,
            (State::Alive, State::Suspect) => Decision::Refute,
            (State::Alive, State::Dead | State::Left) => Decision::Revive,
            (State::Suspect, State::Alive | State::Suspect) => Decision::Suspect,
            // Only the member itself, alive at a newer incarnation, brings back a member gone.
            (State::Suspect, State::Dead | State::Left) => Decision::Ignore,
            (State::Dead | State::Left, State::Alive | State::Suspect) => Decision::Kill,
            (State::Dead | State::Left, State::Dead | State::Left) => Decision::Bury,
        }
    }

    /// Applies one piece of news; `push_pull` marks state lists (see [`Self::decide`]).
    pub(super) fn apply(&mut self, now: Instant, u: Update<T>, push_pull: bool) {
        let mut u = u;
        match self.decide(&u, push_pull) {
            Decision::Ignore => {}
            Decision::TableFull => self.stats.members_dropped += 1,
            Decision::Local => self.news_about_me(u),
            Decision::Join => {
                let addrs = self.stored_addrs(&u.addrs);
                self.members.insert(
                    u.member.clone(),
                    u.incarnation,
                    State::Alive,
                    addrs.clone(),
                    &mut self.rng,
                );
                self.live += 1;
                let (member, incarnation) = (u.member.clone(), u.incarnation);
                self.broadcasts.push_sharing(u, Some(&addrs));
                self.emit(Event::Joined {
                    member,
                    addrs,
                    incarnation,
                });
            }
            Decision::Tombstone => {
                // Dead or departed: a tombstone, so that older "alive" news cannot resurrect it.
                // It waits among the gone, out of the probe round.
                let addrs = self.stored_addrs(&u.addrs);
                let member = u.member.clone();
                self.members
                    .push(member.clone(), u.incarnation, u.state, addrs);
                self.add_tombstone(now, member, u.incarnation);
            }
            d @ (Decision::Revive | Decision::Refresh | Decision::Refute) => {
                let member = u.member.clone();
                let addrs = self.members.set_addrs(&member, &u.addrs);
                let incarnation = u.incarnation;
                self.members.set(&member, incarnation, State::Alive);
                self.stop_suspicion(&member);
                self.broadcasts.push_sharing(u, Some(&addrs));
                if d == Decision::Refute {
                    self.emit(Event::Refuted {
                        member,
                        addrs,
                        incarnation,
                    });
                } else if d == Decision::Revive {
                    self.live += 1;
                    self.members.reschedule(&member, &mut self.rng);
                    self.emit(Event::Joined {
                        member,
                        addrs,
                        incarnation,
                    });
                }
            }
            Decision::Suspect => {
                // Invariant: `check` passed, so suspect and dead news name who suspects.
                let Some(by) = u.by.clone() else { return };
                let member = u.member.clone();
                let addrs = self.members.addrs(&member).clone();
                self.members.set(&member, u.incarnation, State::Suspect);
                self.start_suspicion(now, member.clone(), by.clone());
                if by != self.me {
                    self.maybe_confirm_soon(now, &member);
                }
                self.emit(Event::Suspected {
                    member,
                    addrs: addrs.clone(),
                    incarnation: u.incarnation,
                    by,
                });
                u.state = State::Suspect;
                u.addrs = addrs.to_vec();
                self.broadcasts.push_sharing(u, Some(&addrs));
            }
            Decision::Confirm => {
                // Invariant: `check` passed, so suspect and dead news name who suspects.
                let Some(by) = u.by.clone() else { return };
                self.confirm_suspicion(&u.member, &by);
                u.state = State::Suspect;
                let held = self.members.addrs(&u.member);
                self.broadcasts.push_sharing(u, Some(held));
            }
            Decision::Kill => {
                let member = u.member.clone();
                let addrs = self.members.addrs(&member).clone();
                self.members.set(&member, u.incarnation, u.state);
                self.stop_suspicion(&member);
                self.live -= 1;
                self.add_tombstone(now, member.clone(), u.incarnation);
                let (incarnation, state) = (u.incarnation, u.state);
                self.broadcasts.push_sharing(u, Some(&addrs));
                self.emit(if state == State::Dead {
                    Event::Failed {
                        member,
                        addrs,
                        incarnation,
                    }
                } else {
                    Event::Left {
                        member,
                        addrs,
                        incarnation,
                    }
                });
            }
            Decision::Bury => {
                // Newer news of a member already gone: remember it silently so that stale gossip
                // cannot revive it.
                self.members.set(&u.member, u.incarnation, u.state);
                self.add_tombstone(now, u.member, u.incarnation);
            }
        }
    }

    /// The list to store for a new member: members without addresses share one.
    fn stored_addrs(&self, addrs: &[Address]) -> Arc<[Address]> {
        if addrs.is_empty() {
            self.members.no_addrs().clone()
        } else {
            addrs.into()
        }
    }

    fn news_about_me(&mut self, u: Update<T>) {
        if self.status == Status::Left {
            return;
        }
        let leaving = matches!(self.status, Status::Leaving { .. });
        // Anything newer than "alive at our incarnation" must be answered, except our own
        // departure while we are leaving.
        let refute = supersedes((u.incarnation, u.state), (self.incarnation, State::Alive))
            && !(leaving && u.state == State::Left);
        if !refute {
            // Someone still holds older bad news about us: our refutation missed them. Queue
            // our current state again so the answer to their message carries it.
            if u.state != State::Alive && !leaving && !self.broadcasts.contains(&self.me) {
                self.broadcasts.push(self.my_update());
            }
            return;
        }
        if u.state != State::Alive {
            // Lifeguard: having to refute means others could not reach us in time.
            self.local_health = (self.local_health + 1).min(self.config.max_local_health);
            self.stats.refutations += 1;
        }
        self.incarnation = u.incarnation.saturating_add(1);
        if leaving {
            self.broadcasts.push(Update {
                member: self.me.clone(),
                incarnation: self.incarnation,
                state: State::Left,
                addrs: self.my_addrs.to_vec(),
                by: None,
                credential: Credential::default(),
            });
        } else {
            self.broadcasts.push(self.my_update());
        }
        if u.state != State::Alive {
            self.spread_refutation(u.by);
        }
    }

    /// Sends our refutation at once, in gossip messages of its own, to the member that suspected
    /// us or declared us dead and to a few random members: waiting for our next probe, or for a
    /// gossip round, leaves the suspicion running everywhere meanwhile, and the suspector is the
    /// member whose view spreads it.
    fn spread_refutation(&mut self, by: Option<T>) {
        let fanout = self.config.indirect_probes.max(1);
        let by = by.filter(|b| *b != self.me);
        let mut targets = self.random_members(fanout, by.as_ref(), true);
        targets.extend(by);
        for to in targets {
            self.send(to, Payload::Gossip, None);
        }
    }

    /// Our fresher news when `u` is stale bad news: a suspicion or death of a member we know
    /// alive at a newer incarnation, ourselves included. Its sender missed the refutation, and
    /// its own suspicion timer may still run: we tell it directly (see [`Self::correct`]). About
    /// ourselves this is the last chance: when every message of our refutation was lost, the
    /// members holding the suspicion keep gossiping it, to us among others, and each one that
    /// does is answered.
    pub(super) fn fresher_than(&self, u: &Update<T>) -> Option<Update<T>> {
        if !matches!(u.state, State::Suspect | State::Dead) {
            return None;
        }
        if u.member == self.me {
            let mine = (self.incarnation, State::Alive);
            return supersedes(mine, (u.incarnation, u.state)).then(|| self.my_update());
        }
        let (incarnation, state) = self.members.get(&u.member)?;
        if state != State::Alive || !supersedes((incarnation, state), (u.incarnation, u.state)) {
            return None;
        }
        Some(Update {
            member: u.member.clone(),
            incarnation,
            state: State::Alive,
            addrs: self.members.addrs(&u.member).to_vec(),
            by: None,
            credential: Credential::default(),
        })
    }
}
