package kms

import (
	"context"
	"errors"
	"time"

	"github.com/sigil-kms/sigil/keystore"
)

// KeyUpdate changes a key's settings; nil fields stay as they are. A zero
// RotationPeriod stops scheduled rotation.
type KeyUpdate struct {
	RotationPeriod   *time.Duration
	NextRotationTime *time.Time
	DestroyDelay     *time.Duration
	PublishLead      *time.Duration
}

// UpdateKey changes the key's rotation schedule, destroy delay or publish
// lead. Setting a rotation period without a next rotation time schedules
// the next rotation one period from now.
func (s *Service) UpdateKey(ctx context.Context, name string, u KeyUpdate) (keystore.Key, error) {
	k, err := s.GetKey(ctx, name)
	if err != nil {
		return keystore.Key{}, err
	}
	period, destroy, lead := k.RotationPeriod, k.DestroyDelay, k.PublishLead
	if u.RotationPeriod != nil {
		period = *u.RotationPeriod
	}
	if u.DestroyDelay != nil {
		destroy = *u.DestroyDelay
	}
	if u.PublishLead != nil {
		lead = *u.PublishLead
	}
	if err := checkSettings(k.Purpose, period, destroy, lead); err != nil {
		return keystore.Key{}, err
	}
	su := keystore.KeyUpdate{RotationPeriod: u.RotationPeriod, DestroyDelay: u.DestroyDelay, PublishLead: u.PublishLead, NextRotationTime: u.NextRotationTime}
	switch {
	case period == 0:
		none := time.Time{}
		su.NextRotationTime = &none
	case u.NextRotationTime == nil && u.RotationPeriod != nil:
		next := s.now().Add(period)
		su.NextRotationTime = &next
	case u.NextRotationTime != nil && u.NextRotationTime.IsZero():
		return keystore.Key{}, newError(ErrInvalidArgument, "next rotation time must be set while a rotation period is")
	}
	k, err = s.store.UpdateKey(ctx, k.ID, su)
	if errors.Is(err, keystore.ErrNotFound) {
		return keystore.Key{}, newError(ErrNotFound, "key not found")
	}
	if err != nil {
		return keystore.Key{}, internal("update key", err)
	}
	return k, nil
}

// transitions are the allowed state changes of a version, by operation.
var transitions = map[string]keystore.Transition{
	"enable":  {From: []keystore.State{keystore.StateDisabled}, To: keystore.StateEnabled},
	"disable": {From: []keystore.State{keystore.StateEnabled}, To: keystore.StateDisabled, NotPrimary: true},
	"destroy": {From: []keystore.State{keystore.StateEnabled, keystore.StateDisabled}, To: keystore.StateDestroyScheduled, NotPrimary: true},
	"restore": {From: []keystore.State{keystore.StateDestroyScheduled}, To: keystore.StateDisabled},
}

// EnableKeyVersion enables a disabled version.
func (s *Service) EnableKeyVersion(ctx context.Context, name string, version uint32) (keystore.Key, keystore.Version, error) {
	return s.transition(ctx, name, version, "enable")
}

// DisableKeyVersion disables an enabled version that is not the primary
// (or staged primary). A disabled version neither encrypts, decrypts, signs
// nor appears in JWKS, and keeps its HSM object.
func (s *Service) DisableKeyVersion(ctx context.Context, name string, version uint32) (keystore.Key, keystore.Version, error) {
	return s.transition(ctx, name, version, "disable")
}

// ScheduleKeyVersionDestruction schedules an enabled or disabled version
// that is not the primary for destruction after the key's destroy delay.
func (s *Service) ScheduleKeyVersionDestruction(ctx context.Context, name string, version uint32) (keystore.Key, keystore.Version, error) {
	return s.transition(ctx, name, version, "destroy")
}

// RestoreKeyVersion cancels a scheduled destruction; the version becomes
// disabled.
func (s *Service) RestoreKeyVersion(ctx context.Context, name string, version uint32) (keystore.Key, keystore.Version, error) {
	return s.transition(ctx, name, version, "restore")
}

// transition applies one of the transitions to a version, explaining a
// refusal with the version's current state.
func (s *Service) transition(ctx context.Context, name string, version uint32, op string) (keystore.Key, keystore.Version, error) {
	k, err := s.GetKey(ctx, name)
	if err != nil {
		return keystore.Key{}, keystore.Version{}, err
	}
	t := transitions[op]
	if t.To == keystore.StateDestroyScheduled {
		t.DestroyTime = s.now().Add(k.DestroyDelay)
	}
	v, err := s.store.SetVersionState(ctx, k.ID, version, t)
	switch {
	case err == nil:
		return k, v, nil
	case errors.Is(err, keystore.ErrNotFound):
		return keystore.Key{}, keystore.Version{}, newError(ErrNotFound, "key version not found")
	case !errors.Is(err, keystore.ErrConflict):
		return keystore.Key{}, keystore.Version{}, internal(op+" version", err)
	}
	// Explain the refusal from the current state.
	cur, gerr := s.store.GetVersion(ctx, k.ID, version)
	if gerr != nil || cur.State == keystore.StatePending {
		return keystore.Key{}, keystore.Version{}, newError(ErrNotFound, "key version not found")
	}
	if t.NotPrimary && (version == k.PrimaryVersion || version == k.StagedPrimary) {
		return keystore.Key{}, keystore.Version{}, newError(ErrFailedPrecondition, "the primary version cannot be disabled or destroyed; rotate first")
	}
	return keystore.Key{}, keystore.Version{}, newError(ErrFailedPrecondition, "key version is %s", cur.State)
}
