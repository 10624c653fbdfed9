// SPDX-License-Identifier: GPL-2.0
/*
 * eeprom_wire: wire a 24c32 EEPROM on the virtio i2c adapter to the "wp"
 * line of the virtio-gpio chip, the way board code would, so that the
 * nvmem core (or at24 with wp_over_config=1) requests the write-protect
 * GPIO through gpiod_get(client, "wp").
 *
 * Both devices are found by what they are (the driver bound to their
 * parent), not by number. The gpiod_lookup_table is keyed by the chip
 * label and the hardware offset of the line named "wp": on 6.1 a lookup
 * keyed by line name walks every gpio_device, including numbed ones whose
 * chip is NULL, and oopses. The table is registered before the client is
 * created, so at24 finds the line when it probes.
 *
 * After a hot-replug the new chip has a new label: write to the "rewire"
 * parameter to unregister the client (at24 remove: the nvmem put path),
 * drop the table, and wire again to the current chip.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/device.h>
#include <linux/gpio/driver.h>
#include <linux/gpio/machine.h>
#include <linux/i2c.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/mutex.h>
#include <linux/property.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/version.h>

#define EW_GPIO_DRIVER	"gpio_virtio"
#define EW_I2C_DRIVER	"i2c_virtio"

static char *line_name = "wp";
module_param(line_name, charp, 0444);
MODULE_PARM_DESC(line_name, "Name of the virtio-gpio line wired to the EEPROM's WP pin (default wp)");

static char *chip_type = "24c32";
module_param(chip_type, charp, 0444);
MODULE_PARM_DESC(chip_type, "at24 device type of the EEPROM (default 24c32)");

static ushort addr = 0x50;
module_param(addr, ushort, 0444);
MODULE_PARM_DESC(addr, "7-bit I2C address of the EEPROM (default 0x50)");

static uint pagesize = 32;
module_param(pagesize, uint, 0444);
MODULE_PARM_DESC(pagesize, "Page size passed to at24 through a software node (default 32)");

struct ew_state {
	bool wired;
	char label[32];		/* gpio chip label, e.g. virtio1 */
	char dev_id[32];	/* i2c client name, e.g. 0-0050 */
	unsigned int offset;	/* hw offset of the wp line in the chip */
	int adapter_nr;
	struct gpiod_lookup_table *table;
	struct i2c_client *client;
	struct property_entry props[2];
	struct software_node swnode;
};

static DEFINE_MUTEX(ew_lock);
static struct ew_state ew;
static bool ew_ready;

/* What the gpio chip match callback found. */
struct ew_chip {
	char label[32];
	unsigned int offset;
	bool found;
	bool chip_without_line;	/* a virtio-gpio chip exists, but not the line */
};

#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 7, 0)
#define EW_MATCH_CONST const
#else
#define EW_MATCH_CONST
#endif

struct ew_match_ctx {
	const char *line;
	struct ew_chip *out;
};

static bool ew_bound_to(struct device *dev, const char *driver)
{
	return dev && dev->driver && dev->driver->name &&
	       !strcmp(dev->driver->name, driver);
}

/*
 * Called by gpiolib for each live chip (6.1: under gpio_lock; 6.12: under
 * the device's SRCU read lock), so copy what we need and do not sleep.
 */
static int ew_match_chip(struct gpio_chip *gc, EW_MATCH_CONST void *data)
{
	EW_MATCH_CONST struct ew_match_ctx *ctx = data;
	unsigned int i;

	if (!gc->label || !ew_bound_to(gc->parent, EW_GPIO_DRIVER))
		return 0;
	if (!gc->names) {
		ctx->out->chip_without_line = true;
		return 0;
	}
	for (i = 0; i < gc->ngpio; i++) {
		if (gc->names[i] && !strcmp(gc->names[i], ctx->line)) {
			strscpy(ctx->out->label, gc->label, sizeof(ctx->out->label));
			ctx->out->offset = i;
			ctx->out->found = true;
			return 1;
		}
	}
	ctx->out->chip_without_line = true;
	return 0;
}

static int ew_find_chip(struct ew_chip *chip)
{
	struct ew_match_ctx ctx = { .line = line_name, .out = chip };

	memset(chip, 0, sizeof(*chip));
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 7, 0)
	{
		struct gpio_device *gdev = gpio_device_find(&ctx, ew_match_chip);

		if (gdev)
			gpio_device_put(gdev);
	}
#else
	gpiochip_find(&ctx, ew_match_chip);
#endif
	if (chip->found)
		return 0;
	if (chip->chip_without_line)
		pr_err("a %s chip exists but has no line named \"%s\"\n",
		       EW_GPIO_DRIVER, line_name);
	else
		pr_err("no gpio chip bound to %s\n", EW_GPIO_DRIVER);
	return -ENODEV;
}

static int ew_match_adapter(struct device *dev, void *data)
{
	struct i2c_adapter *adap = i2c_verify_adapter(dev);
	int *nr = data;

	if (!adap || !ew_bound_to(adap->dev.parent, EW_I2C_DRIVER))
		return 0;
	*nr = adap->nr;
	return 1;
}

static int ew_find_adapter(int *nr)
{
	*nr = -1;
	i2c_for_each_dev(nr, ew_match_adapter);
	if (*nr < 0) {
		pr_err("no i2c adapter bound to %s\n", EW_I2C_DRIVER);
		return -ENODEV;
	}
	return 0;
}

/* Undo ew_wire(). Called with ew_lock held. */
static void ew_unwire(void)
{
	if (ew.client) {
		pr_info("removing client %s (at24 unbinds, the nvmem device goes)\n",
			ew.dev_id);
		i2c_unregister_device(ew.client);
		ew.client = NULL;
	}
	if (ew.table) {
		gpiod_remove_lookup_table(ew.table);
		kfree(ew.table);
		ew.table = NULL;
	}
	if (ew.wired)
		pr_info("unwired %s from chip %s line %u\n", ew.dev_id,
			ew.label, ew.offset);
	ew.wired = false;
}

/* Find both devices, register the lookup, create the client. ew_lock held. */
static int ew_wire(void)
{
	struct i2c_board_info info = {};
	struct i2c_adapter *adap;
	struct ew_chip chip;
	struct i2c_client *client;
	int nr, ret;

	ret = ew_find_chip(&chip);
	if (ret)
		return ret;
	ret = ew_find_adapter(&nr);
	if (ret)
		return ret;

	strscpy(ew.label, chip.label, sizeof(ew.label));
	ew.offset = chip.offset;
	ew.adapter_nr = nr;
	snprintf(ew.dev_id, sizeof(ew.dev_id), "%d-%04x", nr, addr);

	/* One entry plus the terminating empty one. */
	ew.table = kzalloc(struct_size(ew.table, table, 2), GFP_KERNEL);
	if (!ew.table)
		return -ENOMEM;
	ew.table->dev_id = ew.dev_id;
	ew.table->table[0] =
		GPIO_LOOKUP_IDX(ew.label, ew.offset, "wp", 0, GPIO_ACTIVE_HIGH);
	gpiod_add_lookup_table(ew.table);

	ew.props[0] = PROPERTY_ENTRY_U32("pagesize", pagesize);
	memset(&ew.props[1], 0, sizeof(ew.props[1]));
	memset(&ew.swnode, 0, sizeof(ew.swnode));
	ew.swnode.name = "eeprom-wire";
	ew.swnode.properties = ew.props;

	strscpy(info.type, chip_type, sizeof(info.type));
	info.addr = addr;
	info.swnode = &ew.swnode;

	adap = i2c_get_adapter(nr);
	if (!adap) {
		pr_err("i2c adapter %d went away\n", nr);
		ret = -ENODEV;
		goto err_table;
	}
	client = i2c_new_client_device(adap, &info);
	i2c_put_adapter(adap);
	if (IS_ERR(client)) {
		ret = PTR_ERR(client);
		pr_err("creating %s at 0x%02x on i2c-%d failed: %d\n",
		       chip_type, addr, nr, ret);
		goto err_table;
	}
	ew.client = client;
	ew.wired = true;
	pr_info("wired chip=%s line=%s offset=%u adapter=i2c-%d client=%s type=%s pagesize=%u driver=%s\n",
		ew.label, line_name, ew.offset, nr, ew.dev_id, chip_type,
		pagesize, client->dev.driver ? client->dev.driver->name : "none");
	return 0;

err_table:
	gpiod_remove_lookup_table(ew.table);
	kfree(ew.table);
	ew.table = NULL;
	return ret;
}

static int ew_rewire_set(const char *val, const struct kernel_param *kp)
{
	int ret;

	if (!READ_ONCE(ew_ready))
		return -EAGAIN;
	mutex_lock(&ew_lock);
	pr_info("rewire requested\n");
	ew_unwire();
	ret = ew_wire();
	mutex_unlock(&ew_lock);
	return ret;
}

static int ew_rewire_get(char *buf, const struct kernel_param *kp)
{
	int n;

	mutex_lock(&ew_lock);
	if (ew.wired)
		n = sysfs_emit(buf, "wired chip=%s offset=%u adapter=%d client=%s\n",
			       ew.label, ew.offset, ew.adapter_nr, ew.dev_id);
	else
		n = sysfs_emit(buf, "unwired\n");
	mutex_unlock(&ew_lock);
	return n;
}

static const struct kernel_param_ops ew_rewire_ops = {
	.set = ew_rewire_set,
	.get = ew_rewire_get,
};
module_param_cb(rewire, &ew_rewire_ops, NULL, 0644);
MODULE_PARM_DESC(rewire, "Write anything: remove the client and table and wire again to the current chip. Read: the wiring.");

static int __init ew_init(void)
{
	int ret;

	mutex_lock(&ew_lock);
	ret = ew_wire();
	mutex_unlock(&ew_lock);
	if (ret)
		return ret;
	WRITE_ONCE(ew_ready, true);
	return 0;
}

static void __exit ew_exit(void)
{
	WRITE_ONCE(ew_ready, false);
	mutex_lock(&ew_lock);
	ew_unwire();
	mutex_unlock(&ew_lock);
}

module_init(ew_init);
module_exit(ew_exit);

MODULE_DESCRIPTION("Wire a 24c32 on virtio-i2c to the virtio-gpio \"wp\" line");
MODULE_LICENSE("GPL");
