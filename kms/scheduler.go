package kms

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/sigil-kms/sigil/hsm"
	"github.com/sigil-kms/sigil/keystore"
)

// schedulerBatch is the most rotations or destructions one pass does.
const schedulerBatch = 100

// RunScheduler runs scheduled work every interval until ctx ends. Every
// replica runs it; the store makes sure that one replica at a time does a
// pass.
// The first pass runs one interval after the start (sigild reconciles
// before it serves).
func (s *Service) RunScheduler(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := s.RunScheduled(ctx); err != nil && ctx.Err() == nil {
			s.log.LogAttrs(ctx, slog.LevelError, "scheduled work failed", slog.String("cause", err.Error()))
		}
	}
}

// RunScheduled does one pass of scheduled work, unless another replica is
// doing one: it promotes staged primaries that are due, rotates keys whose
// rotation is due or whose primary used up its encryption budget, destroys
// versions whose destruction is due, and repairs half-made versions.
func (s *Service) RunScheduled(ctx context.Context) error {
	start := time.Now()
	ran, err := s.store.RunExclusive(ctx, "scheduler", func(ctx context.Context) error {
		now := s.now()
		if _, err := s.store.PromoteDue(ctx, now); err != nil {
			return internal("promote", err)
		}
		return errors.Join(
			s.rotateDue(ctx, now),
			s.rotateForBudget(ctx),
			s.destroyDue(ctx, now),
			s.reconcilePending(ctx),
		)
	})
	s.log.LogAttrs(ctx, slog.LevelDebug, "scheduler pass", slog.Bool("ran", ran))
	if s.observeRun != nil {
		s.observeRun(ran, time.Since(start), err)
	}
	if err != nil {
		return internal("scheduler", err)
	}
	return nil
}

// rotateDue rotates every key whose scheduled rotation is due, once, and
// moves its next rotation one period from now: a scheduler that was down
// catches up with one rotation, not one per missed period.
func (s *Service) rotateDue(ctx context.Context, now time.Time) error {
	keys, err := s.store.ListDueRotations(ctx, now, schedulerBatch)
	if err != nil {
		return internal("list due rotations", err)
	}
	var errs []error
	for _, k := range keys {
		if k.RotationPeriod <= 0 {
			continue
		}
		claimed, err := s.store.ClaimRotation(ctx, k.ID, now, now.Add(k.RotationPeriod))
		if err != nil {
			errs = append(errs, internal("claim rotation", err))
			continue
		}
		if !claimed {
			continue
		}
		if _, v, err := s.rotate(ctx, k, false); err != nil {
			// Make it due again, so the next pass retries rather than
			// waiting a whole period.
			if _, uerr := s.store.UpdateKey(ctx, k.ID, keystore.KeyUpdate{NextRotationTime: &now}); uerr != nil {
				err = errors.Join(err, internal("reschedule rotation", uerr))
			}
			errs = append(errs, err)
		} else {
			s.log.LogAttrs(ctx, slog.LevelInfo, "scheduled rotation", slog.String("key", k.Name), slog.Uint64("version", uint64(v.Version)))
		}
	}
	return errors.Join(errs...)
}

// rotateForBudget rotates keys whose primary crossed the soft encryption
// limit on this replica, if that version is still primary.
func (s *Service) rotateForBudget(ctx context.Context) error {
	var errs []error
	for id, version := range s.budget.dueForBudget() {
		k, err := s.keyByID(ctx, id)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if s.Primary(k) != version || k.StagedPrimary > version {
			continue // already rotated, here or elsewhere
		}
		if _, v, err := s.rotate(ctx, k, true); err != nil {
			errs = append(errs, err)
		} else {
			s.log.LogAttrs(ctx, slog.LevelInfo, "rotation for the encryption limit", slog.String("key", k.Name), slog.Uint64("version", uint64(v.Version)))
		}
	}
	return errors.Join(errs...)
}

// keyByID finds a key by its ID among all keys.
func (s *Service) keyByID(ctx context.Context, id [16]byte) (keystore.Key, error) {
	after := ""
	for {
		keys, err := s.store.ListKeys(ctx, after, 1000)
		if err != nil {
			return keystore.Key{}, internal("list keys", err)
		}
		for _, k := range keys {
			if k.ID == id {
				return s.store.GetKey(ctx, k.Name)
			}
		}
		if len(keys) < 1000 {
			return keystore.Key{}, newError(ErrNotFound, "key not found")
		}
		after = keys[len(keys)-1].Name
	}
}

// destroyDue destroys versions whose destruction time has come: the row
// becomes DESTROYED first, then the HSM object is deleted. A crash between
// the two leaves an object that Reconcile deletes.
func (s *Service) destroyDue(ctx context.Context, now time.Time) error {
	due, err := s.store.ListVersionsByState(ctx, keystore.StateDestroyScheduled, now, schedulerBatch)
	if err != nil {
		return internal("list due destructions", err)
	}
	var errs []error
	for _, v := range due {
		_, err := s.store.SetVersionState(ctx, v.KeyID, v.Version, keystore.Transition{
			From: []keystore.State{keystore.StateDestroyScheduled}, To: keystore.StateDestroyed, DestroyTime: now, DueBy: now,
		})
		if errors.Is(err, keystore.ErrConflict) {
			continue // restored (and perhaps rescheduled) meanwhile
		}
		if err != nil {
			errs = append(errs, internal("mark destroyed", err))
			continue
		}
		if err := s.hsm.Destroy(ctx, v.HSMID); err != nil && !errors.Is(err, hsm.ErrNotFound) {
			errs = append(errs, internal("destroy", err))
		}
	}
	return errors.Join(errs...)
}

// Reconcile repairs what a crash can leave behind: a version still pending
// after the grace period loses its row and then its HSM object (if it was
// made), and a destroyed version whose HSM object survived loses the
// object. sigild calls it at start; the scheduler repairs pending versions
// on every pass.
func (s *Service) Reconcile(ctx context.Context) error {
	return errors.Join(s.reconcilePending(ctx), s.reconcileDestroyed(ctx))
}

func (s *Service) reconcilePending(ctx context.Context) error {
	pending, err := s.store.ListVersionsByState(ctx, keystore.StatePending, time.Time{}, schedulerBatch)
	if err != nil {
		return internal("list pending versions", err)
	}
	var errs []error
	for _, v := range pending {
		if s.pendingGrace > 0 && s.now().Sub(v.CreateTime) < s.pendingGrace {
			continue // probably being made right now
		}
		// The row goes first: if the version was committed meanwhile, the
		// abort fails and its object must stay.
		err := s.store.AbortVersion(ctx, v.KeyID, v.Version)
		if errors.Is(err, keystore.ErrConflict) || errors.Is(err, keystore.ErrNotFound) {
			continue
		}
		if err != nil {
			errs = append(errs, internal("abort pending version", err))
			continue
		}
		if err := s.hsm.Destroy(ctx, v.HSMID); err != nil && !errors.Is(err, hsm.ErrNotFound) {
			errs = append(errs, internal("destroy pending object", err))
			continue
		}
		s.log.LogAttrs(ctx, slog.LevelWarn, "removed a half-made version", slog.Uint64("version", uint64(v.Version)))
	}
	return errors.Join(errs...)
}

func (s *Service) reconcileDestroyed(ctx context.Context) error {
	destroyed, err := s.store.ListVersionsByState(ctx, keystore.StateDestroyed, time.Time{}, 10*schedulerBatch)
	if err != nil {
		return internal("list destroyed versions", err)
	}
	var errs []error
	for _, v := range destroyed {
		if err := s.hsm.Destroy(ctx, v.HSMID); err != nil && !errors.Is(err, hsm.ErrNotFound) {
			errs = append(errs, internal("destroy leftover object", err))
		}
	}
	return errors.Join(errs...)
}
