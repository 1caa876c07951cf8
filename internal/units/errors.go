package units

import "errors"

var (
	// ErrSyntax is returned when a string is not a number followed by a
	// known unit.
	ErrSyntax = errors.New("invalid syntax")

	// ErrRange is returned when a value is negative, does not fit in an
	// int64, or is a non-zero rate below one byte per second.
	ErrRange = errors.New("value out of range")
)
