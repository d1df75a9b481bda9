package spool

// sysSyncfs is syncfs(2)'s number, which package syscall lacks on 386.
const sysSyncfs = 344
