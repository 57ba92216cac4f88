package main

import "github.com/spf13/cobra"

// newTreeCommand is `ferry tree` (being written).
func newTreeCommand() *cobra.Command {
	return &cobra.Command{Use: "tree", Short: "not written yet", Hidden: true}
}

// newRemoveCommand is `ferry remove` (being written).
func newRemoveCommand() *cobra.Command {
	return &cobra.Command{Use: "remove", Short: "not written yet", Hidden: true}
}
