-- AlterTable
ALTER TABLE "JlensShare" ADD COLUMN     "steerGenerated" BOOLEAN;
