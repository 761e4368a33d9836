/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The FUSE operations on clone inodes (ops-clone.c), called by ops.c for
 * nodes of kind CFS_NODE_CLONE.  Each one replies to req.
 */
#ifndef CLONEFS_OPS_CLONE_H
#define CLONEFS_OPS_CLONE_H

#include "clonefs.h"

void cfs_clone_op_lookup_reply(fuse_req_t req, cfs_context *ctx, cfs_node *n);
void cfs_clone_op_getattr(fuse_req_t req, cfs_context *ctx, cfs_node *n);
void cfs_clone_op_setattr(fuse_req_t req, cfs_context *ctx, cfs_node *n, struct stat *st, int to_set);
void cfs_clone_op_readlink(fuse_req_t req, cfs_context *ctx, cfs_node *n);
void cfs_clone_op_mknod(fuse_req_t req, cfs_context *ctx, cfs_node *parent, const char *name, mode_t mode,
                        dev_t rdev, const char *target);
void cfs_clone_op_unlink(fuse_req_t req, cfs_context *ctx, cfs_node *parent, const char *name, bool dir);
void cfs_clone_op_rename(fuse_req_t req, cfs_context *ctx, cfs_node *parent, const char *name, cfs_node *new_parent,
                         const char *new_name, unsigned flags);
void cfs_clone_op_link(fuse_req_t req, cfs_context *ctx, cfs_node *n, cfs_node *new_parent, const char *new_name);
void cfs_clone_op_open(fuse_req_t req, cfs_context *ctx, cfs_node *n, struct fuse_file_info *fi);
void cfs_clone_op_create(fuse_req_t req, cfs_context *ctx, cfs_node *parent, const char *name, mode_t mode,
                         struct fuse_file_info *fi);
void cfs_clone_op_release(fuse_req_t req, cfs_context *ctx, struct fuse_file_info *fi);
void cfs_clone_op_read(fuse_req_t req, cfs_context *ctx, cfs_node *n, size_t size, off_t off);
void cfs_clone_op_write(fuse_req_t req, cfs_context *ctx, cfs_node *n, const char *buf, size_t size, off_t off);
void cfs_clone_op_fsync(fuse_req_t req, cfs_context *ctx, cfs_node *n, int datasync);
void cfs_clone_op_fallocate(fuse_req_t req, cfs_context *ctx, cfs_node *n, int mode, off_t offset, off_t length);
void cfs_clone_op_lseek(fuse_req_t req, cfs_context *ctx, cfs_node *n, off_t off, int whence);
void cfs_clone_op_opendir(fuse_req_t req, cfs_context *ctx, cfs_node *n, struct fuse_file_info *fi);
void cfs_clone_op_releasedir(struct fuse_file_info *fi);
void cfs_clone_op_readdir(fuse_req_t req, cfs_context *ctx, cfs_node *n, size_t size, off_t off, bool plus,
                          struct fuse_file_info *fi);
void cfs_clone_op_getxattr(fuse_req_t req, cfs_context *ctx, cfs_node *n, const char *name, size_t size);
void cfs_clone_op_listxattr(fuse_req_t req, cfs_context *ctx, cfs_node *n, size_t size);
void cfs_clone_op_setxattr(fuse_req_t req, cfs_context *ctx, cfs_node *n, const char *name, const char *value,
                           size_t size, int flags);
void cfs_clone_op_removexattr(fuse_req_t req, cfs_context *ctx, cfs_node *n, const char *name);

#endif
