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
 * The load parameters (chip_type, addr, pagesize, line_name) describe the
 * first EEPROM. Write "<type> <addr> [<pagesize> [<line>]]" to the
 * "add_eeprom" parameter to wire one more, with a lookup table of its own
 * (dev_id: its client name), possibly on the same line as another one:
 * several EEPROMs sharing one WP line.
 *
 * After a hot-replug the new chip has a new label: write to the "rewire"
 * parameter to unregister every client (at24 remove: the nvmem put path),
 * drop the tables, and wire them again, in order, to the current chip.
 * Unloading the module removes them all, the last one first.
 *
 * With wire=0 the module wires nothing at load. Its "level_irq" parameter
 * is a small interrupt consumer: user space can only request edge events
 * (the GPIO character device), a driver can request a level-triggered
 * interrupt. Write "request <chip label> <line name> <level-high|level-low|
 * edge-rising|edge-falling|edge-both>", "disable" (disable_irq), "enable"
 * (enable_irq) or "free"; read "requested ... count=N" (handler runs since
 * the request) or "none".
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/atomic.h>
#include <linux/ctype.h>
#include <linux/device.h>
#include <linux/gpio/consumer.h>
#include <linux/gpio/driver.h>
#include <linux/interrupt.h>
#include <linux/gpio/machine.h>
#include <linux/i2c.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/mutex.h>
#include <linux/nvmem-provider.h>
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

static bool wire = true;
module_param(wire, bool, 0444);
MODULE_PARM_DESC(wire, "Wire the EEPROM at load (default 1; 0: only the level_irq consumer)");

static uint pagesize = 32;
module_param(pagesize, uint, 0444);
MODULE_PARM_DESC(pagesize, "Page size passed to at24 through a software node (default 32)");

#define EW_MAX_CLIENTS	8

/* One EEPROM: what to create, and what was created for it. */
struct ew_client {
	bool wired;
	char type[I2C_NAME_SIZE];	/* at24 device type, e.g. 24c32 */
	char line[32];		/* name of the gpio line wired to WP */
	u16 addr;
	unsigned int pagesize;
	char label[32];		/* gpio chip label, e.g. virtio1 */
	char dev_id[32];	/* i2c client name, e.g. 0-0050 */
	unsigned int offset;	/* hw offset of the wp line in the chip */
	int adapter_nr;
	struct gpiod_lookup_table *table;
	struct i2c_client *client;
	struct property_entry props[2];
	char node_name[24];
	struct software_node swnode;
};

static DEFINE_MUTEX(ew_lock);
/* The EEPROMs in the order they were added; ew_count of them are in use. */
static struct ew_client ew[EW_MAX_CLIENTS];
static unsigned int ew_count;
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

static int ew_find_chip(const char *line, struct ew_chip *chip)
{
	struct ew_match_ctx ctx = { .line = line, .out = chip };

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
		       EW_GPIO_DRIVER, line);
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

/* Undo ew_wire() for one EEPROM. Called with ew_lock held. */
static void ew_unwire(struct ew_client *c)
{
	if (c->client) {
		pr_info("removing client %s (at24 unbinds, the nvmem device goes)\n",
			c->dev_id);
		i2c_unregister_device(c->client);
		c->client = NULL;
	}
	if (c->table) {
		gpiod_remove_lookup_table(c->table);
		kfree(c->table);
		c->table = NULL;
	}
	if (c->wired)
		pr_info("unwired %s from chip %s line %u\n", c->dev_id,
			c->label, c->offset);
	c->wired = false;
}

/* Undo every wiring, the last EEPROM first. Called with ew_lock held. */
static void ew_unwire_all(void)
{
	unsigned int i;

	for (i = ew_count; i > 0; i--)
		ew_unwire(&ew[i - 1]);
}

/*
 * Find both devices, register the EEPROM's own lookup (dev_id: its client
 * name), create the client. Called with ew_lock held.
 */
static int ew_wire(struct ew_client *c)
{
	struct i2c_board_info info = {};
	struct i2c_adapter *adap;
	struct ew_chip chip;
	struct i2c_client *client;
	int nr, ret;

	ret = ew_find_chip(c->line, &chip);
	if (ret)
		return ret;
	ret = ew_find_adapter(&nr);
	if (ret)
		return ret;

	strscpy(c->label, chip.label, sizeof(c->label));
	c->offset = chip.offset;
	c->adapter_nr = nr;
	snprintf(c->dev_id, sizeof(c->dev_id), "%d-%04x", nr, c->addr);

	/* One entry plus the terminating empty one. */
	c->table = kzalloc(struct_size(c->table, table, 2), GFP_KERNEL);
	if (!c->table)
		return -ENOMEM;
	c->table->dev_id = c->dev_id;
	c->table->table[0] =
		GPIO_LOOKUP_IDX(c->label, c->offset, "wp", 0, GPIO_ACTIVE_HIGH);
	gpiod_add_lookup_table(c->table);

	c->props[0] = PROPERTY_ENTRY_U32("pagesize", c->pagesize);
	memset(&c->props[1], 0, sizeof(c->props[1]));
	memset(&c->swnode, 0, sizeof(c->swnode));
	c->swnode.name = c->node_name;
	c->swnode.properties = c->props;

	strscpy(info.type, c->type, sizeof(info.type));
	info.addr = c->addr;
	info.swnode = &c->swnode;

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
		       c->type, c->addr, nr, ret);
		goto err_table;
	}
	c->client = client;
	c->wired = true;
	pr_info("wired chip=%s line=%s offset=%u adapter=i2c-%d client=%s type=%s pagesize=%u driver=%s\n",
		c->label, c->line, c->offset, nr, c->dev_id, c->type,
		c->pagesize, client->dev.driver ? client->dev.driver->name : "none");
	return 0;

err_table:
	gpiod_remove_lookup_table(c->table);
	kfree(c->table);
	c->table = NULL;
	return ret;
}

/*
 * Take the next free slot for an EEPROM (not wired yet). Called with ew_lock
 * held. The first keeps the software node name of the single-EEPROM module.
 */
static int ew_add(const char *type, u16 eeprom_addr, unsigned int page,
		  const char *line, struct ew_client **out)
{
	struct ew_client *c;
	unsigned int i;

	if (!*type || strlen(type) >= sizeof(c->type) || !*line ||
	    strlen(line) >= sizeof(c->line) || eeprom_addr > 0x7f) {
		pr_err("cannot wire \"%s\" at 0x%02x on line \"%s\"\n",
		       type, eeprom_addr, line);
		return -EINVAL;
	}
	for (i = 0; i < ew_count; i++) {
		if (ew[i].addr == eeprom_addr) {
			pr_err("an EEPROM at 0x%02x is already wired\n", eeprom_addr);
			return -EEXIST;
		}
	}
	if (ew_count == EW_MAX_CLIENTS)
		return -ENOSPC;
	c = &ew[ew_count];
	memset(c, 0, sizeof(*c));
	strscpy(c->type, type, sizeof(c->type));
	strscpy(c->line, line, sizeof(c->line));
	c->addr = eeprom_addr;
	c->pagesize = page;
	if (ew_count)
		snprintf(c->node_name, sizeof(c->node_name), "eeprom-wire-%u",
			 ew_count);
	else
		strscpy(c->node_name, "eeprom-wire", sizeof(c->node_name));
	*out = c;
	return 0;
}

/* Add an EEPROM and wire it; on failure the slot stays free. ew_lock held. */
static int ew_add_and_wire(const char *type, u16 eeprom_addr,
			   unsigned int page, const char *line)
{
	struct ew_client *c;
	int ret;

	ret = ew_add(type, eeprom_addr, page, line, &c);
	if (ret)
		return ret;
	ret = ew_wire(c);
	if (ret)
		return ret;
	ew_count++;
	return 0;
}

static int ew_rewire_set(const char *val, const struct kernel_param *kp)
{
	unsigned int i;
	int ret = 0;

	if (!READ_ONCE(ew_ready))
		return -EAGAIN;
	mutex_lock(&ew_lock);
	pr_info("rewire requested\n");
	ew_unwire_all();
	/* In the order they were added; stop at the first that fails. */
	for (i = 0; i < ew_count && !ret; i++)
		ret = ew_wire(&ew[i]);
	/* Loaded with wire=0 and nothing added: the EEPROM of the parameters. */
	if (!ew_count)
		ret = ew_add_and_wire(chip_type, addr, pagesize, line_name);
	mutex_unlock(&ew_lock);
	return ret;
}

/* One line per EEPROM; "unwired" alone when there is none. */
static int ew_rewire_get(char *buf, const struct kernel_param *kp)
{
	struct ew_client *c;
	unsigned int i;
	int n = 0;

	mutex_lock(&ew_lock);
	for (i = 0; i < ew_count; i++) {
		c = &ew[i];
		if (c->wired)
			n += sysfs_emit_at(buf, n,
					   "wired chip=%s offset=%u adapter=%d client=%s\n",
					   c->label, c->offset, c->adapter_nr,
					   c->dev_id);
		else if (ew_count > 1)
			n += sysfs_emit_at(buf, n, "unwired addr=0x%02x\n",
					   c->addr);
		else
			n += sysfs_emit_at(buf, n, "unwired\n");
	}
	if (!ew_count)
		n = sysfs_emit(buf, "unwired\n");
	mutex_unlock(&ew_lock);
	return n;
}

static const struct kernel_param_ops ew_rewire_ops = {
	.set = ew_rewire_set,
	.get = ew_rewire_get,
};
module_param_cb(rewire, &ew_rewire_ops, NULL, 0644);
MODULE_PARM_DESC(rewire, "Write anything: remove every client and table and wire them again, in order, to the current chip. Read: the wiring, one line per EEPROM.");

/* The next word of *p, words separated by blanks ("" after the last). */
static char *ew_word(char **p)
{
	char *w = skip_spaces(*p), *end = w;

	while (*end && !isspace(*end))
		end++;
	if (*end)
		*end++ = '\0';
	*p = end;
	return w;
}

/* "<type> <addr> [<pagesize> [<line>]]": one more EEPROM, wired now. */
static int ew_add_set(const char *val, const struct kernel_param *kp)
{
	char buf[96], *p = buf, *type, *a, *ps, *line;
	unsigned int page = pagesize;
	u16 eeprom_addr;
	int ret;

	if (!READ_ONCE(ew_ready))
		return -EAGAIN;
	if (strscpy(buf, val, sizeof(buf)) < 0)
		return -EINVAL;
	type = ew_word(&p);
	a = ew_word(&p);
	ps = ew_word(&p);
	line = ew_word(&p);
	if (!*type || kstrtou16(a, 0, &eeprom_addr) ||
	    (*ps && kstrtouint(ps, 0, &page)) || *ew_word(&p)) {
		pr_err("add_eeprom: want \"<type> <addr> [<pagesize> [<line>]]\"\n");
		return -EINVAL;
	}
	if (!*line)
		line = line_name;
	mutex_lock(&ew_lock);
	ret = ew_add_and_wire(type, eeprom_addr, page, line);
	mutex_unlock(&ew_lock);
	return ret;
}

static const struct kernel_param_ops ew_add_ops = {
	.set = ew_add_set,
};
module_param_cb(add_eeprom, &ew_add_ops, NULL, 0200);
MODULE_PARM_DESC(add_eeprom, "Write \"<type> <addr> [<pagesize> [<line>]]\": wire one more EEPROM (its own lookup for \"wp\" on the line, default line_name and pagesize).");

/* ---- level_irq: a kernel consumer of one interrupt on a virtio-gpio line */

struct li_state {
	struct gpio_desc *desc;
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 7, 0)
	struct gpio_device *gdev;
#endif
	int irq;
	bool disabled;
	char line[32];
	char trigger[16];
	atomic_t count;
};

static DEFINE_MUTEX(li_lock);
static struct li_state li;

static irqreturn_t li_handler(int irq, void *data)
{
	atomic_inc(&li.count);
	return IRQ_HANDLED;
}

struct li_match {
	const char *label;
	const char *line;
	int *offset;
};

static int li_match_chip(struct gpio_chip *gc, EW_MATCH_CONST void *data)
{
	EW_MATCH_CONST struct li_match *m = data;
	unsigned int i;

	if (!gc->label || strcmp(gc->label, m->label) || !gc->names ||
	    !ew_bound_to(gc->parent, EW_GPIO_DRIVER))
		return 0;
	for (i = 0; i < gc->ngpio; i++) {
		if (gc->names[i] && !strcmp(gc->names[i], m->line)) {
			*m->offset = i;
			return 1;
		}
	}
	return 0;
}

/* Called with li_lock held. */
static void li_free(void)
{
	if (li.irq > 0) {
		free_irq(li.irq, &li);
		pr_info("level_irq: freed irq %d of line %s after %d handler runs\n",
			li.irq, li.line, atomic_read(&li.count));
	}
	li.irq = 0;
	li.disabled = false;
	if (li.desc)
		gpiochip_free_own_desc(li.desc);
	li.desc = NULL;
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 7, 0)
	if (li.gdev)
		gpio_device_put(li.gdev);
	li.gdev = NULL;
#endif
}

/* Called with li_lock held. */
static int li_request(const char *label, const char *line, const char *trigger)
{
	struct li_match m = { .label = label, .line = line };
	struct gpio_chip *gc;
	unsigned long flags;
	int offset = -1, irq, ret;

	if (!strcmp(trigger, "level-high"))
		flags = IRQF_TRIGGER_HIGH;
	else if (!strcmp(trigger, "level-low"))
		flags = IRQF_TRIGGER_LOW;
	else if (!strcmp(trigger, "edge-rising"))
		flags = IRQF_TRIGGER_RISING;
	else if (!strcmp(trigger, "edge-falling"))
		flags = IRQF_TRIGGER_FALLING;
	else if (!strcmp(trigger, "edge-both"))
		flags = IRQF_TRIGGER_RISING | IRQF_TRIGGER_FALLING;
	else
		return -EINVAL;
	m.offset = &offset;
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 7, 0)
	li.gdev = gpio_device_find(&m, li_match_chip);
	gc = li.gdev ? gpio_device_get_chip(li.gdev) : NULL;
#else
	gc = gpiochip_find(&m, li_match_chip);
#endif
	if (!gc || offset < 0) {
		pr_err("level_irq: no %s chip %s with a line %s\n",
		       EW_GPIO_DRIVER, label, line);
		ret = -ENODEV;
		goto err;
	}
	li.desc = gpiochip_request_own_desc(gc, offset, "vgn-level-irq",
					    GPIO_ACTIVE_HIGH, GPIOD_IN);
	if (IS_ERR(li.desc)) {
		ret = PTR_ERR(li.desc);
		li.desc = NULL;
		pr_err("level_irq: requesting line %s failed: %d\n", line, ret);
		goto err;
	}
	irq = gpiod_to_irq(li.desc);
	if (irq <= 0) {
		ret = irq ? irq : -ENXIO;
		pr_err("level_irq: line %s has no interrupt: %d\n", line, ret);
		goto err;
	}
	atomic_set(&li.count, 0);
	ret = request_irq(irq, li_handler, flags, "vgn-level-irq", &li);
	if (ret) {
		pr_err("level_irq: request_irq(%d, %s) failed: %d\n", irq, trigger, ret);
		goto err;
	}
	li.irq = irq;
	strscpy(li.line, line, sizeof(li.line));
	strscpy(li.trigger, trigger, sizeof(li.trigger));
	pr_info("level_irq: requested irq %d, %s, on %s line %s (offset %d)\n",
		irq, trigger, label, line, offset);
	return 0;
err:
	li_free();
	return ret;
}

static int li_set(const char *val, const struct kernel_param *kp)
{
	char buf[96], *p = buf, *cmd, *label, *line, *trigger;
	int ret = 0;

	strscpy(buf, val, sizeof(buf));
	cmd = strsep(&p, " \n");
	mutex_lock(&li_lock);
	if (!cmd) {
		ret = -EINVAL;
	} else if (!strcmp(cmd, "request")) {
		label = strsep(&p, " \n");
		line = strsep(&p, " \n");
		trigger = strsep(&p, " \n");
		if (li.irq > 0)
			ret = -EBUSY;
		else if (!label || !line || !trigger)
			ret = -EINVAL;
		else
			ret = li_request(label, line, trigger);
	} else if (li.irq <= 0) {
		ret = -ENOENT;
	} else if (!strcmp(cmd, "disable")) {
		if (!li.disabled)
			disable_irq(li.irq);
		li.disabled = true;
	} else if (!strcmp(cmd, "enable")) {
		if (li.disabled)
			enable_irq(li.irq);
		li.disabled = false;
	} else if (!strcmp(cmd, "free")) {
		li_free();
	} else {
		ret = -EINVAL;
	}
	mutex_unlock(&li_lock);
	return ret;
}

static int li_get(char *buf, const struct kernel_param *kp)
{
	int n;

	mutex_lock(&li_lock);
	if (li.irq > 0)
		n = sysfs_emit(buf, "requested line=%s trigger=%s irq=%d disabled=%d count=%d\n",
			       li.line, li.trigger, li.irq, li.disabled,
			       atomic_read(&li.count));
	else
		n = sysfs_emit(buf, "none count=%d\n", atomic_read(&li.count));
	mutex_unlock(&li_lock);
	return n;
}

static const struct kernel_param_ops li_ops = {
	.set = li_set,
	.get = li_get,
};
module_param_cb(level_irq, &li_ops, NULL, 0644);
MODULE_PARM_DESC(level_irq, "Write: request <label> <line> <trigger> | disable | enable | free. Read: the state and the handler runs.");

static int __init ew_init(void)
{
	int ret = 0;

	if (wire) {
		mutex_lock(&ew_lock);
		ret = ew_add_and_wire(chip_type, addr, pagesize, line_name);
		mutex_unlock(&ew_lock);
	}
	if (ret)
		return ret;
	WRITE_ONCE(ew_ready, true);
	return 0;
}

static void __exit ew_exit(void)
{
	WRITE_ONCE(ew_ready, false);
	mutex_lock(&li_lock);
	li_free();
	mutex_unlock(&li_lock);
	mutex_lock(&ew_lock);
	ew_unwire_all();
	ew_count = 0;
	mutex_unlock(&ew_lock);
}

/*
 * What the kernel's headers had when this module was built, for the
 * scenario runner's "needs" check: facts nothing shows at run time.
 * Kbuild looks for the field in include/linux/nvmem-provider.h and defines
 * EW_NVMEM_CONFIG_WP_GPIO; the assertion makes the build fail rather than
 * claim a field the compiler does not see. The runner reads the modinfo tag
 * without loading the module; the "features" parameter shows the same
 * once it is loaded.
 */
#ifdef EW_NVMEM_CONFIG_WP_GPIO
static_assert(__same_type(((struct nvmem_config *)NULL)->wp_gpio, struct gpio_desc *));
#define EW_FEATURES "nvmem_config.wp_gpio"
#else
#define EW_FEATURES ""
#endif
MODULE_INFO(vgn_features, EW_FEATURES);
static char *features = EW_FEATURES;
module_param(features, charp, 0444);
MODULE_PARM_DESC(features, "Kernel features seen when this module was built (read only): nvmem_config.wp_gpio");

module_init(ew_init);
module_exit(ew_exit);

MODULE_DESCRIPTION("Wire EEPROMs on virtio-i2c to a virtio-gpio line (\"wp\"); a level-interrupt consumer");
MODULE_LICENSE("GPL");
